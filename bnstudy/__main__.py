from bnstudy.cli import main

if __name__ == "__main__":  # a spawned worker (the `processes` launcher) imports this module without running it
    raise SystemExit(main())
