"""Run folders and experiment files as a hostile user leaves them: each case one clear line, nothing lost."""
import json
import math

import pytest

from bnstudy.cli import main
from bnstudy.config import FIGURE_KINDS, ConfigError, EXPERIMENTS_DIR, load_experiment
from bnstudy.recording import RunDir


def test_meta_json_is_strict_json_with_null_for_a_non_finite_number(tmp_path):
    run = RunDir(tmp_path, "x", "a", 0)
    run.path.mkdir(parents=True)
    run.write_meta({"final_train_loss": math.nan, "curve": [1.0, math.inf], "status": "diverged"})
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    meta = json.loads(run.meta_path.read_text(encoding="utf-8"), parse_constant=refuse)
    assert meta == {"final_train_loss": None, "curve": [1.0, None], "status": "diverged"}


def test_the_figure_kinds_an_experiment_may_name_are_the_ones_plots_draws():
    from bnstudy.plots import FIGURES
    assert set(FIGURES) == set(FIGURE_KINDS)


@pytest.mark.parametrize("line", ['figures = ["nope"]', '[plots.f]\nkind = "nope"\nruns = [{ norm = "none" }]',
                                  '[plots.f]\nkind = "training"\nruns = [{ nrom = "none" }]'])
def test_an_unknown_figure_is_refused_when_the_file_loads(tmp_path, line):
    path = tmp_path / "mine.toml"
    path.write_text(f'family = "vgg"\nname = "mine"\n{line}\n[arms.standard.model]\nnorm = "none"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="mine.toml"):
        load_experiment(str(path))


def test_plot_takes_the_experiment_file_that_run_took(tmp_path, capsys):
    path = tmp_path / "mine.toml"
    text = (EXPERIMENTS_DIR / "noisy_bn.toml").read_text(encoding="utf-8").replace('name = "noisy-bn"', 'name = "mine"')
    path.write_text(text, encoding="utf-8")
    common = ["--results-dir", str(tmp_path / "r")]
    assert main(["run", str(path), "--preset", "smoke", "--arms", "standard", "--no-progress",
                 "--set", "data.dataset=synthetic", *common]) == 0
    assert main(["plot", str(path), *common]) == 0
    assert (tmp_path / "r" / "mine" / "figures" / "training.png").exists()


def test_a_run_not_finished_is_left_out_of_figures_and_numbers_and_said(tmp_path, capsys):
    from bnstudy.reading import Results
    from bnstudy.report import has_runs
    assert main(["run", "noisy-bn", "--preset", "smoke", "--arms", "standard", "--seeds", "0", "1", "--no-progress",
                 "--results-dir", str(tmp_path), "--set", "data.dataset=synthetic"]) == 0
    RunDir(tmp_path, "noisy-bn", "standard", 1).update_meta(status="running")  # as a run killed part way leaves it
    capsys.readouterr()
    results = Results(tmp_path, "noisy-bn")
    assert list(results.meta.seed) == [0] and "(n=1)" in results.caption()
    assert "standard/seed-1: not finished (running)" in capsys.readouterr().err
    assert sorted(Results(tmp_path, "noisy-bn", unfinished=True).meta.seed) == [0, 1]  # asked for: read
    RunDir(tmp_path, "noisy-bn", "standard", 0).update_meta(status="running")
    assert not has_runs(tmp_path, "noisy-bn")  # the report lists it as not run yet, rather than failing


def test_the_caption_names_the_arms_trained_on_fewer_seeds(tmp_path):
    from bnstudy.reading import Results
    common = ["--preset", "smoke", "--no-progress", "--results-dir", str(tmp_path), "--set", "data.dataset=synthetic"]
    assert main(["run", "noisy-bn", "--arms", "standard", "--seeds", "0", "1", *common]) == 0
    assert main(["run", "noisy-bn", "--arms", "batchnorm", "--seeds", "1", *common]) == 0
    results = Results(tmp_path, "noisy-bn")
    assert "| seeds: 0, 1 (n=2); batchnorm: seed 1" in results.caption()
    assert results.matching([{"norm": "batch"}]).caption().endswith("| seeds: 1 (n=1)")


# ----------------------------------------------------------------------------------------------
# Run folders copied, renamed, edited and truncated: RunDir.load believes a folder only when it checks out
# ----------------------------------------------------------------------------------------------
import hashlib  # noqa: E402
import lzma  # noqa: E402
import shutil  # noqa: E402

SMOKE = ["--preset", "smoke", "--no-progress", "--set", "data.dataset=synthetic"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """noisy-bn's standard arm, seeds 0 and 1, and seed 0 at LR 0.5 in another folder: 12 steps each."""
    root = tmp_path_factory.mktemp("trained")
    assert main(["run", "noisy-bn", "--arms", "standard", "--seeds", "0", "1", *SMOKE, "--results-dir",
                 str(root / "a")]) == 0
    assert main(["run", "noisy-bn", "--arms", "standard", "--seeds", "0", *SMOKE, "--set", "train.lr=0.5",
                 "--results-dir", str(root / "lr05")]) == 0
    return root


@pytest.fixture
def results(tmp_path, trained):
    shutil.copytree(trained / "a", tmp_path / "r")
    return tmp_path / "r"


def arm_dir(results, arm="standard"):
    return results / "noisy-bn" / arm


def rerun(results, capsys, *seeds):
    code = main(["run", "noisy-bn", "--arms", "standard", "--seeds", *seeds, *SMOKE, "--results-dir", str(results)])
    return code, capsys.readouterr()


def snapshot(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_plain_csv_beside_a_verified_archive_is_never_read_nor_packed_over_it(results, capsys):
    from bnstudy.reading import Results
    seed = arm_dir(results) / "seed-0"
    before = Results(results, "noisy-bn").tables["metrics"]
    (seed / "metrics.csv").write_text("step,arm,seed,split,metric,value\n0,standard,0,train,acc,0.99\n",
                                      encoding="utf-8")
    kept = snapshot(seed)
    capsys.readouterr()
    after = Results(results, "noisy-bn")
    assert after.tables["metrics"].equals(before)
    assert "a plain copy beside the verified metrics.csv.xz, not read" in capsys.readouterr().err
    code, out = rerun(results, capsys, "0")
    assert code == 0 and "already complete" in out.out and snapshot(seed) == kept  # nothing re-packed or rehashed


def test_a_kill_after_the_archives_were_listed_is_finished_by_the_next_run(results, capsys):
    seed = arm_dir(results) / "seed-0"
    (seed / "metrics.csv").write_bytes(lzma.decompress((seed / "metrics.csv.xz").read_bytes()))  # the same rows
    code, _ = rerun(results, capsys, "0")
    assert code == 0 and not (seed / "metrics.csv").exists()


def test_a_lock_file_that_is_a_link_never_truncates_its_target(results, tmp_path, capsys):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n", encoding="utf-8")
    (results / "noisy-bn" / ".lock").unlink(missing_ok=True)
    (results / "noisy-bn" / ".lock").symlink_to(target)
    code, out = rerun(results, capsys, "0")
    assert code == 2 and ".lock is not a plain file" in out.err and out.err.count("\n") == 1
    assert target.read_text(encoding="utf-8") == "keep me\n"


def test_an_empty_meta_json_beside_finished_tables_is_never_trained_over(results, capsys):
    seed = arm_dir(results) / "seed-0"
    (seed / "meta.json").write_text("{}", encoding="utf-8")
    kept = snapshot(seed)
    code, out = rerun(results, capsys, "0")
    assert code == 2 and "meta.json is missing or empty" in out.err and snapshot(seed) == kept


def test_a_run_of_another_lr_copied_into_an_arm_without_its_config_is_not_believed(results, trained, capsys):
    from bnstudy.reading import Results
    seed = arm_dir(results) / "seed-1"
    shutil.rmtree(seed)
    shutil.copytree(trained / "lr05" / "noisy-bn" / "standard" / "seed-0", seed)
    (seed / "config.json").unlink()
    code, out = rerun(results, capsys, "0", "1")
    assert code == 2 and "no config.json" in out.err
    assert list(Results(results, "noisy-bn").meta.seed) == [0]  # left out of every figure and number


def test_a_run_under_another_arms_name_or_seed_is_not_pooled_there(results, capsys):
    from bnstudy.reading import Results
    shutil.copytree(arm_dir(results), arm_dir(results, "batchnorm"))
    shutil.copytree(arm_dir(results) / "seed-1", arm_dir(results) / "seed-5")
    capsys.readouterr()
    results_read = Results(results, "noisy-bn")
    err = capsys.readouterr().err
    assert list(results_read.meta.arm) == ["standard", "standard"] and sorted(results_read.meta.seed) == [0, 1]
    assert "arm: 'standard' in config.json, 'batchnorm' by its folder" in err
    assert "seed: 1 in config.json, 5 by its folder" in err


def test_a_folder_not_named_as_a_seed_is_never_read_and_breaks_nothing(results, capsys):
    from bnstudy.reading import Results
    shutil.copytree(arm_dir(results) / "seed-0", arm_dir(results) / "seed-00")
    shutil.copytree(arm_dir(results) / "seed-0", arm_dir(results) / "seed-0.bak")
    capsys.readouterr()
    assert sorted(Results(results, "noisy-bn").meta.seed) == [0, 1]
    assert "seed-00 is not a run folder" in capsys.readouterr().err
    assert main(["plot", "noisy-bn", "--results-dir", str(results)]) == 0
    assert rerun(results, capsys, "0", "1")[0] == 0


@pytest.mark.parametrize("field, value, said", [("lr", 0.5, "lr: 0.5 in meta.json, 0.1 in config.json"),
                                                ("final_test_acc", 0.99, "final_test_acc: 0.99 in meta.json"),
                                                ("seed", 3, "seed: 3 in meta.json, 1 in config.json")])
def test_a_hand_edited_meta_json_is_not_believed(results, capsys, field, value, said):
    from bnstudy.reading import Results
    from bnstudy.recording import RunDir
    RunDir(results, "noisy-bn", "standard", 1).update_meta(**{field: value})
    capsys.readouterr()
    assert list(Results(results, "noisy-bn").meta.seed) == [0]
    assert said in capsys.readouterr().err


def test_complete_written_on_a_run_killed_part_way_is_refused_before_anything_is_packed(results, capsys):
    from bnstudy.recording import RunDir
    run = RunDir(results, "noisy-bn", "standard", 1)
    metrics = lzma.decompress(run.packed("metrics").read_bytes()).decode().splitlines()
    for name in ("metrics", "activations", "probes"):  # as a run killed at step 6 leaves them, plain
        run.csv(name).write_bytes(lzma.decompress(run.packed(name).read_bytes()))
        run.packed(name).unlink()
    lines_before_step_6 = [line for line in metrics if not line[:1].isdigit() or int(line.split(",")[0]) < 6]
    run.csv("metrics").write_text("\n".join(lines_before_step_6) + "\n", encoding="utf-8")
    meta = run.read_meta()
    del meta["files"]
    run.write_meta(meta)
    kept = snapshot(run.path)
    code, out = rerun(results, capsys, "1")
    assert code == 2 and "meta.json lists none of its files" in out.err and snapshot(run.path) == kept


# ----------------------------------------------------------------------------------------------
# Experiment files that would silently drop what they say
# ----------------------------------------------------------------------------------------------
ARMS = '[arms.standard.model]\nnorm = "none"\n[arms.batchnorm.model]\nnorm = "batch"\n'


@pytest.mark.parametrize("text, said", [
    ('[sweep]\nkey = "train.lr"\nvalues = [0.1, 0.1000001]\n', "both name the arm 'standard-lr0.1'"),
    ('[sweep]\nkey = "seed"\nvalues = [0, 1]\n', "[sweep] key 'seed' is set by the command line"),
    ('[presets.smoek]\ntrain.steps = 5\n', "unknown preset 'smoek'"),
    ('[base]\nseed = 3\n', "[base] sets 'seed'"),
    ('[presets.quick]\npreset = "paper"\n', "[presets.quick] sets 'preset'"),
])
def test_an_experiment_file_that_says_something_it_would_drop_is_refused(tmp_path, text, said):
    path = tmp_path / "mine.toml"
    path.write_text(f'family = "vgg"\nname = "mine"\n{text}{ARMS}', encoding="utf-8")
    with pytest.raises(ConfigError, match="mine.toml") as refused:
        load_experiment(str(path))
    assert said in str(refused.value)


def test_an_arm_that_sets_its_own_preset_is_refused(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(f'family = "vgg"\nname = "mine"\n{ARMS}[arms.batchnorm]\npreset = "paper"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[arms.batchnorm\] sets 'preset'"):
        load_experiment(str(path))


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch, capsys):
    """As a tmpfs of 1 MB does: the checkpoint's write fails inside torch.save ('unexpected pos'), a text file's in
    its fsync (OSError 28)."""
    import errno as errno_
    import torch

    from bnstudy import files

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed; unexpected pos 64 vs 0")
    monkeypatch.setattr(torch, "save", full)
    code = main(["run", "noisy-bn", "--arms", "standard", *SMOKE, "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "could not write a checkpoint" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.undo()

    def no_space(fd):
        raise OSError(errno_.ENOSPC, "No space left on device")
    assert main(["run", "noisy-bn", "--arms", "standard", *SMOKE, "--results-dir", str(tmp_path / "whole")]) == 0
    capsys.readouterr()
    monkeypatch.setattr(files.os, "fsync", no_space)
    with pytest.raises(OSError) as full_disk:
        files.atomic_write_text(tmp_path / "x.json", "{}")
    assert full_disk.value.filename == str(tmp_path / "x.json")  # a full disk names the file it could not write
    assert not list(tmp_path.glob(".x.json.*.tmp"))
    assert main(["report", "--results-dir", str(tmp_path / "whole"), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert err == f"bnstudy: error: {tmp_path / 'whole' / 'noisy-bn' / 'summary.csv'}: No space left on device\n", err


def test_a_killed_writers_temporary_file_is_removed_by_the_next_run(results, capsys):
    seed = arm_dir(results) / "seed-0"
    (seed / ".metrics.csv.xz.4242.tmp").write_bytes(b"half")
    assert rerun(results, capsys, "0")[0] == 0 and not list(seed.glob(".*.tmp"))


def test_a_figure_whose_probe_did_not_run_is_said_and_the_others_drawn(tmp_path, capsys):
    common = ["--results-dir", str(tmp_path)]
    assert main(["run", "noisy-bn", "--arms", "standard", *SMOKE, "--set", "activations.layers=[]", *common]) == 0
    capsys.readouterr()
    assert main(["plot", "noisy-bn", *common]) == 0
    err = capsys.readouterr().err
    assert "figure activations not drawn: no p rows in its runs" in err and "Traceback" not in err
    assert (tmp_path / "noisy-bn" / "figures" / "training.png").exists()
    assert main(["report", "--no-figures", *common]) == 0


def test_an_experiment_whose_runs_are_all_unfinished_is_one_line_for_plot_and_not_run_for_report(results, capsys):
    from bnstudy.recording import RunDir
    for seed in (0, 1):
        RunDir(results, "noisy-bn", "standard", seed).update_meta(status="running")
    capsys.readouterr()
    assert main(["plot", "noisy-bn", "--results-dir", str(results)]) == 2
    err = capsys.readouterr().err
    assert "no whole run of 'noisy-bn'" in err and "Traceback" not in err
    assert main(["report", "--no-figures", "--results-dir", str(results)]) == 2  # nothing finished anywhere
    assert "no results under" in capsys.readouterr().err


def test_deeply_nested_toml_and_a_batch_of_one_under_bn_are_refused_before_training(tmp_path, capsys):
    deep = "[" * 1000 + "]" * 1000
    for setting, said in ((f"train.lr={deep}", "nested too deep"), ("train.batch_size=1", "train.batch_size 1")):
        code = main(["run", "noisy-bn", "--arms", "batchnorm", *SMOKE, "--set", setting,
                     "--results-dir", str(tmp_path)])
        err = capsys.readouterr().err
        assert code == 2 and said in err and err.count("\n") == 1
    assert not (tmp_path / "noisy-bn" / "batchnorm").exists()
    path = tmp_path / "deep.toml"
    path.write_text(f'family = "vgg"\nname = "deep"\nx = {deep}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="nested too deep"):
        load_experiment(str(path))


@pytest.mark.parametrize("argv, said", [
    (["bench", "--batch", "100000"], "--batch must be between 2 and 2,048"),
    (["data", "download", "--data-dir", "FILE"], "is a file; give the folder"),
    (["data", "check", "--data-dir", "FILE"], "is a file; give the folder"),
])
def test_options_are_checked_and_named_as_typed(tmp_path, capsys, argv, said):
    (tmp_path / "FILE").write_text("x", encoding="utf-8")
    argv = [str(tmp_path / a) if a == "FILE" else a for a in argv]
    assert main([*argv, "--results-dir", str(tmp_path)] if argv[0] == "bench" else argv) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1


# ----------------------------------------------------------------------------------------------
# Fuzzing run folders: copied, renamed, edited and truncated at random
# ----------------------------------------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FILES = ["meta.json", "config.json", "metrics.csv.xz", "activations.csv.xz", "probes.csv.xz"]
MUTATIONS = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(FILES)),
    st.tuples(st.just("truncate"), st.sampled_from(FILES), st.floats(0, 1)),
    st.tuples(st.just("edit"), st.sampled_from(["lr", "seed", "arm", "status", "final_test_acc", "steps", "norm"]),
              st.one_of(st.none(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=5))),
    st.tuples(st.just("rename"), st.sampled_from(["seed-00", "seed-1.bak", "seed-7", "seed-x"])),
    st.tuples(st.just("move-arm"), st.sampled_from(["batchnorm", "other"])),
    st.tuples(st.just("plain-copy"), st.sampled_from(["metrics", "activations", "probes"]), st.binary(max_size=40)),
)


def mutate(folder, mutation):
    kind, *args = mutation
    if kind == "delete":
        (folder / args[0]).unlink(missing_ok=True)
    elif kind == "truncate" and (folder / args[0]).exists():
        data = (folder / args[0]).read_bytes()
        (folder / args[0]).write_bytes(data[: int(len(data) * args[1])])
    elif kind == "edit" and (folder / "meta.json").exists():
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        except ValueError:
            return folder
        if isinstance(meta, dict):
            meta[args[0]] = args[1]
            (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    elif kind == "rename" and not (folder.parent / args[0]).exists():
        folder = folder.rename(folder.parent / args[0])
    elif kind == "move-arm":
        target = folder.parent.parent / args[0] / folder.name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            folder = folder.rename(target)
    elif kind == "plain-copy":
        (folder / f"{args[0]}.csv").write_bytes(args[1])
    return folder


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(MUTATIONS, min_size=1, max_size=3))
def test_fuzzed_run_folders_are_read_verified_or_left_out_with_one_line(trained, tmp_path_factory, mutations):
    """Whatever is done to seed 1's folder: reading gives seed 0 alone or both seeds whole and unchanged, or one
    clear error; never a traceback, and seed 0's numbers never move."""
    from bnstudy.errors import USER_ERRORS
    from bnstudy.reading import Results
    results = tmp_path_factory.mktemp("fuzz") / "r"
    shutil.copytree(trained / "a", results)
    baseline = Results(results, "noisy-bn")
    folder = arm_dir(results) / "seed-1"
    for mutation in mutations:
        folder = mutate(folder, mutation)
    try:
        read = Results(results, "noisy-bn")
    except USER_ERRORS:
        return  # one line at the command line (cli.main)
    seed0 = read.tables["metrics"][(read.tables["metrics"].arm == "standard") & (read.tables["metrics"].seed == 0)]
    assert seed0.reset_index(drop=True).equals(
        baseline.tables["metrics"][baseline.tables["metrics"].seed == 0].reset_index(drop=True))
    for (arm, seed), rows in read.tables["metrics"].groupby(["arm", "seed"]):  # what is read is what was written
        original = baseline.tables["metrics"][baseline.tables["metrics"].seed == seed]
        assert arm == "standard" and rows.reset_index(drop=True).equals(original.reset_index(drop=True))
    assert set(read.meta.lr) == {0.1} and set(read.meta.seed) <= {0, 1}


def test_a_ray_address_nothing_answers_at_is_one_line_within_seconds(tmp_path, monkeypatch, capsys):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    code = main(["run", "noisy-bn", "--arms", "standard", *SMOKE, "--launcher", "ray", "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "RAY_ADDRESS=127.0.0.1:1: nothing answers there" in err and err.count("\n") == 1


def test_a_run_folder_moved_under_another_experiment_is_left_out(results, capsys):
    from bnstudy.reading import Results
    shutil.copytree(results / "noisy-bn", results / "landscape")
    capsys.readouterr()
    with pytest.raises(Exception, match="no whole run of 'landscape'"):
        Results(results, "landscape")
    assert "experiment: 'noisy-bn' in config.json, 'landscape' by its folder" in capsys.readouterr().err
    assert main(["plot", "landscape", "--results-dir", str(results)]) == 2


def test_a_read_only_results_folder_is_one_line_for_plot_and_report(results, monkeypatch, capsys):
    import errno as errno_

    from bnstudy import files

    def read_only(source, target):
        raise OSError(errno_.EROFS, "Read-only file system", str(target))
    monkeypatch.setattr(files.os, "replace", read_only)  # every atomic write ends with its rename
    for command in (["plot", "noisy-bn"], ["report", "--no-figures"]):
        assert main([*command, "--results-dir", str(results)]) == 2
        err = capsys.readouterr().err
        assert "Read-only file system" in err and err.count("\n") == 1
    assert not list(results.rglob(".*.tmp"))
