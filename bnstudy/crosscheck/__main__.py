"""python -m bnstudy.crosscheck"""
from bnstudy.crosscheck import main

raise SystemExit(main())
