"""`python -m pipeline`: the `engines` command. Run by a Python without the project's packages
(outside .venv), it says which package is missing and how to get them, in one paragraph."""
import sys

OWN = "pipeline"


def missing_package_message(exc: ModuleNotFoundError, python: str = sys.executable) -> str:
    name = (exc.name or str(exc)).split(".")[0]
    return (f"error: the Python package '{name}' is not installed for {python}, so `python -m pipeline` cannot "
            "run here (the pipeline's packages live in the project's virtual environment).\n"
            "Next step: run `make install` once in the checkout, then use `.venv/bin/engines ...` "
            "(or `.venv/bin/python -m pipeline ...`).")


def run() -> int:
    try:
        from pipeline.cli import main
        main()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == OWN:   # our own code is broken: that is a bug, show it
            raise
        print(missing_package_message(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())
