//! (tokenize) filled in by its issue.
