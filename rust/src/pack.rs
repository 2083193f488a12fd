//! (pack) filled in by its issue.
