"""``python -m videmo`` is the same as the ``videmo`` command."""

from videmo.cli import main

if __name__ == "__main__":
    main()
