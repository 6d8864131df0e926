"""The one entrypoint: `python run.py [overrides]` or `python run.py -m [sweep overrides]`
(`python run.py --help` lists the config groups and common overrides; installed, `less-run` is the
same command, see less/cli.py)."""

from less.cli import main

if __name__ == "__main__":
    main()
