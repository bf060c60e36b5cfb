//! ListObjectsV2 over a directory tree: keys in S3's byte-wise lexicographic order, rolled up
//! into common prefixes at a delimiter, one page at a time after a marker.
//!
//! Directories are walked depth-first with each directory's entries sorted by the key text
//! they lead to: a file by its name, a directory by its name followed by '/'. Every key under
//! directory `d` starts with `d/`, and no name holds '/', so this order of entries is exactly
//! the order of the keys beneath them.

use std::future::Future;

use strata_types::Timespec;
use strata_vfs::VfsError;

use crate::keys::is_hidden;

/// An entry of a directory that can be an object or hold objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Name in its directory.
    pub name: String,
    /// Inode.
    pub ino: u64,
    /// A directory (else a regular file).
    pub dir: bool,
    /// Size in bytes.
    pub size: u64,
    /// Last data change.
    pub mtime: Timespec,
}

/// Where the walk reads directories from.
pub trait Tree: Sync {
    /// The entries of directory `dir` that are regular files or directories, any order.
    fn children(&self, dir: u64) -> impl Future<Output = Result<Vec<Entry>, VfsError>> + Send;
}

/// Where a page starts: after this key, or after every key under this common prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// The last key or common prefix already returned.
    pub key: String,
    /// `key` is a common prefix.
    pub is_prefix: bool,
}

impl Marker {
    /// The opaque continuation token for this marker.
    pub fn token(&self) -> String {
        format!("{}{}", if self.is_prefix { 'p' } else { 'k' }, hex::encode(self.key.as_bytes()))
    }

    /// Parses a continuation token made by [`Marker::token`].
    pub fn from_token(t: &str) -> Option<Marker> {
        let is_prefix = match t.get(..1)? {
            "p" => true,
            "k" => false,
            _ => return None,
        };
        let key = String::from_utf8(hex::decode(t.get(1..)?).ok()?).ok()?;
        Some(Marker { key, is_prefix })
    }

    fn covers(&self, key: &str) -> bool {
        key <= self.key.as_str() || (self.is_prefix && key.starts_with(self.key.as_str()))
    }
}

/// What to list.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Only keys starting with this.
    pub prefix: String,
    /// Roll keys up at the first occurrence of this after the prefix (empty: none).
    pub delimiter: String,
    /// Start after this.
    pub after: Option<Marker>,
    /// At most this many keys and common prefixes.
    pub max: usize,
}

/// One result of a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// An object.
    Object {
        /// Its key.
        key: String,
        /// Its file.
        entry: Entry,
    },
    /// A common prefix.
    Prefix(String),
}

impl Item {
    /// The key or prefix, where the next page resumes.
    pub fn marker(&self) -> Marker {
        match self {
            Item::Object { key, .. } => Marker { key: key.clone(), is_prefix: false },
            Item::Prefix(p) => Marker { key: p.clone(), is_prefix: true },
        }
    }
}

/// A page of results.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Keys and common prefixes in order.
    pub items: Vec<Item>,
    /// More follow.
    pub truncated: bool,
}

fn sort_key(e: &Entry) -> String {
    if e.dir { format!("{}/", e.name) } else { e.name.clone() }
}

async fn sorted_children<T: Tree>(tree: &T, dir: u64) -> Result<Vec<Entry>, VfsError> {
    let mut v: Vec<Entry> = tree.children(dir).await?.into_iter().filter(|e| !is_hidden(&e.name)).collect();
    v.sort_by_cached_key(sort_key);
    Ok(v)
}

/// Whether the directory holds an object anywhere beneath it (empty directories are no
/// prefix: S3 has no directories, only keys).
async fn has_object<T: Tree>(tree: &T, dir: u64) -> Result<bool, VfsError> {
    let mut todo = vec![dir];
    while let Some(d) = todo.pop() {
        for e in sorted_children(tree, d).await? {
            if !e.dir {
                return Ok(true);
            }
            todo.push(e.ino);
        }
    }
    Ok(false)
}

/// The common prefix `key` rolls up into, if the delimiter occurs after the prefix.
pub fn rollup(prefix: &str, delimiter: &str, key: &str) -> Option<String> {
    if delimiter.is_empty() {
        return None;
    }
    let rest = key.get(prefix.len()..)?;
    rest.find(delimiter).map(|i| format!("{prefix}{}", &rest[..i + delimiter.len()]))
}

/// One page of the listing of the tree under `root`.
pub async fn page<T: Tree>(tree: &T, root: u64, q: &Query) -> Result<Page, VfsError> {
    let mut out = Page::default();
    if q.max == 0 {
        return Ok(out);
    }
    let prefix = q.prefix.as_str();
    let mut last_prefix: Option<String> = q.after.as_ref().filter(|m| m.is_prefix).map(|m| m.key.clone());
    let mut stack: Vec<(String, Vec<Entry>, usize)> = vec![(String::new(), sorted_children(tree, root).await?, 0)];
    while out.items.len() <= q.max {
        let Some((dir_key, entries, next)) = stack.last_mut() else { break };
        let Some(e) = entries.get(*next).cloned() else {
            stack.pop();
            continue;
        };
        *next += 1;
        let key = format!("{dir_key}{}", sort_key(&e));
        if !(key.starts_with(prefix) || (e.dir && prefix.starts_with(key.as_str()))) {
            continue;
        }
        if let Some(m) = &q.after {
            // Every key beneath a directory starts with its key: skip the subtree when the
            // marker is past all of it.
            let passed = if e.dir {
                (!m.key.starts_with(key.as_str()) && m.key.as_str() > key.as_str())
                    || (m.is_prefix && key.starts_with(m.key.as_str()))
            } else {
                m.covers(&key)
            };
            if passed {
                continue;
            }
        }
        match rollup(prefix, &q.delimiter, &key) {
            // The delimiter is inside a directory's own key: its whole subtree is this prefix.
            Some(cp) if !e.dir || key.starts_with(cp.as_str()) => {
                if last_prefix.as_deref() != Some(cp.as_str()) && (!e.dir || has_object(tree, e.ino).await?) {
                    last_prefix = Some(cp.clone());
                    out.items.push(Item::Prefix(cp));
                }
            }
            _ if e.dir => {
                let children = sorted_children(tree, e.ino).await?;
                stack.push((key, children, 0));
            }
            _ => out.items.push(Item::Object { key, entry: e }),
        }
    }
    if out.items.len() > q.max {
        out.items.truncate(q.max);
        out.truncated = true;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    /// A directory tree in memory: inode → entries.
    #[derive(Default)]
    struct Mem {
        dirs: BTreeMap<u64, Vec<Entry>>,
        next: u64,
    }

    impl Mem {
        fn from_keys(keys: &[&str]) -> Mem {
            let mut m = Mem { next: 2, ..Default::default() };
            m.dirs.insert(1, Vec::new());
            for k in keys {
                m.add(k);
            }
            m
        }

        fn add(&mut self, key: &str) {
            let segs: Vec<&str> = key.split('/').collect();
            let mut dir = 1;
            for (i, s) in segs.iter().enumerate() {
                let last = i == segs.len() - 1;
                let found = self.dirs[&dir].iter().find(|e| e.name == *s).cloned();
                dir = match found {
                    Some(e) => e.ino,
                    None => {
                        let ino = self.next;
                        self.next += 1;
                        let e = Entry { name: s.to_string(), ino, dir: !last, size: 1, mtime: Timespec::default() };
                        if let Some(v) = self.dirs.get_mut(&dir) {
                            v.push(e);
                        }
                        if !last {
                            self.dirs.insert(ino, Vec::new());
                        }
                        ino
                    }
                };
            }
        }
    }

    impl Tree for Mem {
        fn children(&self, dir: u64) -> impl Future<Output = Result<Vec<Entry>, VfsError>> + Send {
            let v = self.dirs.get(&dir).cloned().unwrap_or_default();
            // Reverse so the walk cannot rely on the order entries come in.
            async move { Ok(v.into_iter().rev().collect()) }
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    fn names(p: &Page) -> Vec<String> {
        p.items
            .iter()
            .map(|i| match i {
                Item::Object { key, .. } => key.clone(),
                Item::Prefix(p) => format!("P:{p}"),
            })
            .collect()
    }

    fn all_pages(m: &Mem, prefix: &str, delimiter: &str, max: usize) -> Vec<String> {
        let mut after = None;
        let mut got = Vec::new();
        loop {
            let q = Query { prefix: prefix.into(), delimiter: delimiter.into(), after: after.clone(), max };
            let p = block_on(page(m, 1, &q)).expect("page");
            got.extend(names(&p));
            if !p.truncated {
                return got;
            }
            let last = p.items.last().expect("a truncated page has items").marker();
            after = Some(Marker::from_token(&last.token()).expect("token round trip"));
        }
    }

    /// What S3 answers: keys sorted byte-wise, rolled up at the delimiter.
    fn model(keys: &[&str], prefix: &str, delimiter: &str) -> Vec<String> {
        let sorted: BTreeSet<&str> = keys.iter().copied().filter(|k| k.starts_with(prefix)).collect();
        let mut out: Vec<String> = Vec::new();
        for k in sorted {
            match rollup(prefix, delimiter, k) {
                Some(cp) => {
                    let p = format!("P:{cp}");
                    if out.last() != Some(&p) {
                        out.push(p);
                    }
                }
                None => out.push(k.to_string()),
            }
        }
        out
    }

    const KEYS: &[&str] =
        &["a-c", "a/b", "a/c/d", "a0", "b", "photos/2024/jan.jpg", "photos/2024/feb.jpg", "photos/index", "z/y/x"];

    #[test]
    fn lexicographic_order_across_directories() {
        let m = Mem::from_keys(KEYS);
        assert_eq!(
            all_pages(&m, "", "", 1000),
            vec![
                "a-c",
                "a/b",
                "a/c/d",
                "a0",
                "b",
                "photos/2024/feb.jpg",
                "photos/2024/jan.jpg",
                "photos/index",
                "z/y/x"
            ]
        );
    }

    #[test]
    fn delimiter_and_prefix() {
        let m = Mem::from_keys(KEYS);
        assert_eq!(all_pages(&m, "", "/", 1000), vec!["a-c", "P:a/", "a0", "b", "P:photos/", "P:z/"]);
        assert_eq!(all_pages(&m, "photos/", "/", 1000), vec!["P:photos/2024/", "photos/index"]);
        assert_eq!(all_pages(&m, "photos/2024/j", "/", 1000), vec!["photos/2024/jan.jpg"]);
        assert_eq!(all_pages(&m, "a", "", 1000), vec!["a-c", "a/b", "a/c/d", "a0"]);
        assert_eq!(all_pages(&m, "a", "-", 1000), vec!["P:a-", "a/b", "a/c/d", "a0"]);
    }

    #[test]
    fn empty_directories_are_not_prefixes() {
        let mut m = Mem::from_keys(&["k"]);
        if let Some(v) = m.dirs.get_mut(&1) {
            v.push(Entry { name: "empty".into(), ino: 99, dir: true, size: 0, mtime: Timespec::default() });
        }
        m.dirs.insert(99, Vec::new());
        assert_eq!(all_pages(&m, "", "/", 10), vec!["k"]);
        assert_eq!(all_pages(&m, "", "", 10), vec!["k"]);
    }

    #[test]
    fn hidden_entries_are_skipped() {
        let m = Mem::from_keys(&["a", ".strata-s3-uploads/x/00001", "b/.strata-s3-tmp-1"]);
        assert_eq!(all_pages(&m, "", "", 10), vec!["a"]);
        assert_eq!(all_pages(&m, "", "/", 10), vec!["a"]);
    }

    #[test]
    fn paging_resumes_after_start_after() {
        let m = Mem::from_keys(KEYS);
        let q = Query { after: Some(Marker { key: "a/c".into(), is_prefix: false }), max: 3, ..Default::default() };
        let p = block_on(page(&m, 1, &q)).expect("page");
        assert_eq!(names(&p), vec!["a/c/d", "a0", "b"]);
        assert!(p.truncated);
        assert!(Marker::from_token("x00").is_none());
        assert!(Marker::from_token("kzz").is_none());
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["a", "b", "a-", "a0", "ab", "-", "0"], 1..4).prop_map(|v| v.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Paging through any tree yields S3's listing exactly: every key or prefix once, in
        /// order, whatever the page size.
        #[test]
        fn pages_match_the_model(
            keys in proptest::collection::btree_set(key_strategy(), 1..30),
            max in 1usize..5,
            delim in prop_oneof![Just(""), Just("/"), Just("-")],
            prefix in prop_oneof![Just(""), Just("a"), Just("a/"), Just("b/a")],
        ) {
            // A key that is also a directory of another key cannot exist in a file system.
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let keys: Vec<&str> = keys
                .iter()
                .copied()
                .filter(|k| !keys.iter().any(|o| o.starts_with(&format!("{k}/"))))
                .collect();
            let m = Mem::from_keys(&keys);
            prop_assert_eq!(all_pages(&m, prefix, delim, max), model(&keys, prefix, delim));
        }
    }
}
