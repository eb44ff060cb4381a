"""Hidden autograder cases (instructor-only): one module per task family; see grading.case."""
