//! Property test: no input makes parse → validate → expand panic, and every rejected input
//! comes with at least one error.
