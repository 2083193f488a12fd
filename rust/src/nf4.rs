//! (nf4) filled in by its issue.
