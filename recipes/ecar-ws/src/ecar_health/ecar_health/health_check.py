"""Run the self-test of every ecar controller found on PATH.

Prints one line per check and exits 0 when every check passes, else 1.
"""

import argparse
import shutil
import subprocess
import sys

# Executables that must pass `--self-test`, in the order they are checked.
CONTROLLERS = ("motor_controller", "servo_controller")

DEFAULT_TIMEOUT_S = 10.0
QUICK_TIMEOUT_S = 2.0


def run_check(executable, timeout_s):
    """Run `executable --self-test` and return (passed, failure detail or None)."""
    path = shutil.which(executable)
    if path is None:
        return False, "not found on PATH"
    try:
        result = subprocess.run(
            [path, "--self-test"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            universal_newlines=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return False, "timed out after {:g} s".format(timeout_s)
    except OSError as error:
        return False, "could not start: {}".format(error)
    if result.returncode != 0:
        output = " | ".join(line for line in result.stdout.splitlines() if line.strip())
        return False, "exit code {}: {}".format(result.returncode, output)
    return True, None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="health_check", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="use a {:g} s timeout per check instead of {:g} s, and stop at the "
        "first failure".format(QUICK_TIMEOUT_S, DEFAULT_TIMEOUT_S),
    )
    args = parser.parse_args(argv)
    timeout_s = QUICK_TIMEOUT_S if args.quick else DEFAULT_TIMEOUT_S

    failed = 0
    for executable in CONTROLLERS:
        passed, detail = run_check(executable, timeout_s)
        if passed:
            print("ok   {} --self-test".format(executable), flush=True)
        else:
            print("FAIL {} --self-test: {}".format(executable, detail), flush=True)
            failed += 1
            if args.quick:
                break
    if failed:
        print("health_check: FAILED ({} of {} checks)".format(failed, len(CONTROLLERS)))
        return 1
    print("health_check: ok ({} checks)".format(len(CONTROLLERS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
