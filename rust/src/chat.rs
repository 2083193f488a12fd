//! (chat) filled in by its issue.
