//! Which listed objects to keep: all, those with a suffix, or those matching a glob. A
//! filter sees each object's path relative to the store's prefix (`train/shard-000.tar`
//! below `s3://bucket/data/`, not `data/train/shard-000.tar`).

/// Keeps some of a listing's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Every object.
    All,
    /// Objects whose path ends with this (`".tar"`).
    Suffix(String),
    /// Objects whose path matches this glob: `*` any run of characters but `/`, `**` any run
    /// including `/`, `?` one character but `/`, `[abc]` / `[a-z]` / `[!a-z]` one of a set.
    Glob(String),
}

impl Filter {
    /// Objects ending with `suffix`.
    pub fn suffix(suffix: impl Into<String>) -> Self {
        Filter::Suffix(suffix.into())
    }

    /// Objects matching `pattern` (see [`Filter::Glob`]).
    pub fn glob(pattern: impl Into<String>) -> Self {
        Filter::Glob(pattern.into())
    }

    /// Whether the object at `relative` (from the prefix) is kept.
    pub fn keeps(&self, relative: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Suffix(s) => relative.ends_with(s.as_str()),
            Filter::Glob(g) => glob_match(g.as_bytes(), relative.as_bytes()),
        }
    }
}

/// Whether `text` matches the whole of `pattern`.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some(b'*') if pattern.get(1) == Some(&b'*') => {
            let rest = pattern[2..].strip_prefix(b"/").unwrap_or(&pattern[2..]);
            // `**/` also matches nothing at all; otherwise try every split point.
            (0..=text.len()).any(|i| glob_match(rest, &text[i..]))
                || glob_match(&pattern[2..], text)
        }
        Some(b'*') => {
            let rest = &pattern[1..];
            let mut i = 0;
            loop {
                if glob_match(rest, &text[i..]) {
                    return true;
                }
                if i == text.len() || text[i] == b'/' {
                    return false;
                }
                i += 1;
            }
        }
        Some(b'?') => !text.is_empty() && text[0] != b'/' && glob_match(&pattern[1..], &text[1..]),
        Some(b'[') => match (class_end(pattern), text.first()) {
            (Some(end), Some(&c)) => {
                c != b'/'
                    && in_class(&pattern[1..end], c)
                    && glob_match(&pattern[end + 1..], &text[1..])
            }
            (Some(_), None) => false,
            // An unclosed `[` is a literal.
            (None, first) => first == Some(&b'[') && glob_match(&pattern[1..], &text[1..]),
        },
        Some(&p) => text.first() == Some(&p) && glob_match(&pattern[1..], &text[1..]),
    }
}

/// The index of the `]` that closes the class opened at `pattern[0]`.
fn class_end(pattern: &[u8]) -> Option<usize> {
    let start = if pattern.get(1) == Some(&b'!') { 2 } else { 1 };
    // A `]` right after the opening is a member, not the end.
    (start + 1..pattern.len()).find(|&i| pattern[i] == b']')
}

fn in_class(class: &[u8], c: u8) -> bool {
    let (negated, class) = match class.first() {
        Some(b'!') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut i = 0;
    let mut found = false;
    while i < class.len() {
        if i + 2 < class.len() && class[i + 1] == b'-' {
            found |= (class[i]..=class[i + 2]).contains(&c);
            i += 3;
        } else {
            found |= class[i] == c;
            i += 1;
        }
    }
    found != negated
}

#[cfg(test)]
mod tests {
    use super::Filter;

    #[test]
    fn suffix_and_all() {
        assert!(Filter::All.keeps("x"));
        assert!(Filter::suffix(".tar").keeps("a/b-000.tar"));
        assert!(!Filter::suffix(".tar").keeps("a/b-000.tar.idx"));
    }

    #[test]
    fn star_stays_within_a_directory_and_double_star_crosses() {
        let g = Filter::glob("train-*.tar");
        assert!(g.keeps("train-000.tar"));
        assert!(g.keeps("train-.tar"));
        assert!(!g.keeps("sub/train-000.tar"));
        assert!(!g.keeps("train-000.tar.gz"));
        assert!(!g.keeps("val-000.tar"));
        let g = Filter::glob("**/*.tar");
        assert!(g.keeps("a/b/c.tar"));
        assert!(g.keeps("c.tar"));
        assert!(!g.keeps("c.tgz"));
    }

    #[test]
    fn question_mark_and_classes() {
        let g = Filter::glob("shard-0[0-4]?.tar");
        assert!(g.keeps("shard-013.tar"));
        assert!(!g.keeps("shard-053.tar"));
        assert!(!g.keeps("shard-01.tar"));
        assert!(Filter::glob("[!a]x").keeps("bx"));
        assert!(!Filter::glob("[!a]x").keeps("ax"));
        assert!(Filter::glob("a[").keeps("a["));
    }
}
