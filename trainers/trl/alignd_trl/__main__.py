"""Entry point: python -m alignd_trl --job <dir>/job.json (the job directory alignd exported)."""
import argparse
import sys

from .round import run


def main() -> int:
    parser = argparse.ArgumentParser(prog="alignd_trl", description="one alignd training round on TRL")
    parser.add_argument("--job", required=True, help="path of job.json in the exported job directory")
    args = parser.parse_args()
    return run(args.job)


if __name__ == "__main__":
    sys.exit(main())
