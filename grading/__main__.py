"""``python -m grading``: release, check, submit, grade, similarity (see ``grading.cli``)."""

from grading.cli import main

if __name__ == "__main__":
    main()
