//! Train / validation / test splits by identity.
//!
//! Either seeded (identity names sorted, then shuffled with the seed, then cut 70 / 10 / 20 by
//! default), or read from three user files with one identity folder name per line.
//! Both ways produce disjoint parts by construction, and [`Split::check_disjoint`] verifies it.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use rand::seq::SliceRandom;
use tracing::{info, warn};

use crate::error::{DataError, Result};
use crate::index::DatasetIndex;
use crate::rng::{derive_rng, Domain};

/// One of the three parts of a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SplitPart {
    /// Training identities.
    Train,
    /// Validation identities.
    Val,
    /// Held-out test identities.
    Test,
}

impl SplitPart {
    /// All parts, in order.
    pub const ALL: [SplitPart; 3] = [SplitPart::Train, SplitPart::Val, SplitPart::Test];

    /// Lowercase name: `train`, `val` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            SplitPart::Train => "train",
            SplitPart::Val => "val",
            SplitPart::Test => "test",
        }
    }
}

/// Fractions of identities per part; non-negative, summing to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitFractions {
    /// Training fraction.
    pub train: f64,
    /// Validation fraction.
    pub val: f64,
    /// Test fraction.
    pub test: f64,
}

impl Default for SplitFractions {
    /// The paper's 70 / 10 / 20.
    fn default() -> Self {
        SplitFractions {
            train: 0.7,
            val: 0.1,
            test: 0.2,
        }
    }
}

/// Identity indices (into [`DatasetIndex::identities`]) of each part, each sorted ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training identities.
    pub train: Vec<usize>,
    /// Validation identities.
    pub val: Vec<usize>,
    /// Test identities.
    pub test: Vec<usize>,
}

impl Split {
    /// Seeded split of all identities of `index`.
    ///
    /// Part sizes are `round(fraction · n)` for val and test, and the rest for train; when
    /// n ≥ 3, a part with a positive fraction gets at least one identity.
    pub fn seeded(index: &DatasetIndex, seed: u64, fractions: SplitFractions) -> Result<Split> {
        let f = [fractions.train, fractions.val, fractions.test];
        if f.iter().any(|x| !x.is_finite() || *x < 0.0)
            || (f.iter().sum::<f64>() - 1.0).abs() > 1e-6
        {
            return Err(DataError::config(
                "split fractions",
                format!(
                    "{} / {} / {} must be non-negative and sum to 1",
                    f[0], f[1], f[2]
                ),
            ));
        }
        let n = index.identities().len();
        let size = |fraction: f64| {
            let k = (fraction * n as f64).round() as usize;
            if k == 0 && fraction > 0.0 && n >= 3 {
                1
            } else {
                k
            }
        };
        let n_val = size(fractions.val).min(n);
        let n_test = size(fractions.test).min(n - n_val);
        let n_train = n - n_val - n_test;
        // Identities are already sorted by name in the index, so the order does not depend on
        // the filesystem's listing order.
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut derive_rng(seed, 0, Domain::Split, 0));
        let mut split = Split {
            train: order[..n_train].to_vec(),
            val: order[n_train..n_train + n_val].to_vec(),
            test: order[n_train + n_val..].to_vec(),
        };
        split.sort();
        split.check_disjoint(index)?;
        info!(
            "seeded split (seed {seed}): {} train, {} val, {} test identities",
            split.train.len(),
            split.val.len(),
            split.test.len()
        );
        Ok(split)
    }

    /// Split from three files of identity folder names, one per line; blank lines and lines
    /// starting with `#` are ignored.
    /// Names absent from the index are skipped with a warning (e.g. an official list used with a
    /// partial download); a name in two files is an error.
    pub fn from_files(
        index: &DatasetIndex,
        train: impl AsRef<Path>,
        val: impl AsRef<Path>,
        test: impl AsRef<Path>,
    ) -> Result<Split> {
        let read = |path: &Path| -> Result<Vec<String>> {
            let text = fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
            Ok(text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect())
        };
        Split::from_names(
            index,
            &read(train.as_ref())?,
            &read(val.as_ref())?,
            &read(test.as_ref())?,
        )
    }

    /// Split from lists of identity folder names; see [`Split::from_files`] for the rules.
    pub fn from_names(
        index: &DatasetIndex,
        train: &[String],
        val: &[String],
        test: &[String],
    ) -> Result<Split> {
        let mut seen: HashMap<&str, SplitPart> = HashMap::new();
        let mut parts: [Vec<usize>; 3] = Default::default();
        let mut unknown = Vec::new();
        for (part, names) in SplitPart::ALL.into_iter().zip([train, val, test]) {
            for name in names {
                if let Some(&first) = seen.get(name.as_str()) {
                    if first == part {
                        continue;
                    }
                    return Err(DataError::SplitOverlap {
                        name: name.clone(),
                        first: first.name(),
                        second: part.name(),
                    });
                }
                seen.insert(name, part);
                match index.identity_index(name) {
                    Some(i) => parts[part as usize].push(i),
                    None => unknown.push(name.as_str()),
                }
            }
        }
        if !unknown.is_empty() {
            warn!(
                "{} identities of the split files are not in {}, skipped (first: {})",
                unknown.len(),
                index.root().display(),
                unknown[..unknown.len().min(5)].join(", ")
            );
        }
        let [train, val, test] = parts;
        let mut split = Split { train, val, test };
        split.sort();
        split.check_disjoint(index)?;
        Ok(split)
    }

    /// The identities of `part`.
    pub fn part(&self, part: SplitPart) -> &[usize] {
        match part {
            SplitPart::Train => &self.train,
            SplitPart::Val => &self.val,
            SplitPart::Test => &self.test,
        }
    }

    /// Identity folder names of `part`, in index order.
    pub fn names<'a>(&self, index: &'a DatasetIndex, part: SplitPart) -> Vec<&'a str> {
        self.part(part)
            .iter()
            .map(|&i| index.identities()[i].name.as_str())
            .collect()
    }

    /// Writes `train.txt`, `val.txt` and `test.txt` into `dir` (created if needed), readable by
    /// [`Split::from_files`]; each file is written atomically.
    pub fn write_files(&self, index: &DatasetIndex, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        for part in SplitPart::ALL {
            let path = dir.join(format!("{}.txt", part.name()));
            let tmp = dir.join(format!(".{}.txt.tmp", part.name()));
            let mut text = self.names(index, part).join("\n");
            text.push('\n');
            fs::write(&tmp, text).map_err(|e| DataError::io(&tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| DataError::io(&path, e))?;
        }
        Ok(())
    }

    /// Checks that no identity is in two parts and every index is valid for `index`.
    pub fn check_disjoint(&self, index: &DatasetIndex) -> Result<()> {
        let n = index.identities().len();
        let mut owner: Vec<Option<SplitPart>> = vec![None; n];
        for part in SplitPart::ALL {
            for &i in self.part(part) {
                let name = match index.identities().get(i) {
                    Some(identity) => &identity.name,
                    None => {
                        return Err(DataError::config(
                            "split",
                            format!("identity index {i} is out of range for {n} identities"),
                        ))
                    }
                };
                if let Some(first) = owner[i] {
                    return Err(DataError::SplitOverlap {
                        name: name.clone(),
                        first: first.name(),
                        second: part.name(),
                    });
                }
                owner[i] = Some(part);
            }
        }
        Ok(())
    }

    fn sort(&mut self) {
        self.train.sort_unstable();
        self.val.sort_unstable();
        self.test.sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::SyntheticTree;

    fn index(n: usize) -> (tempfile::TempDir, DatasetIndex) {
        let dir = tempfile::tempdir().unwrap();
        SyntheticTree::new(n, 1, 1, 1).write(dir.path()).unwrap();
        let index = DatasetIndex::build(dir.path()).unwrap();
        (dir, index)
    }

    #[test]
    fn seeded_split_is_disjoint_complete_and_reproducible() {
        let (_dir, index) = index(20);
        let a = Split::seeded(&index, 7, SplitFractions::default()).unwrap();
        let b = Split::seeded(&index, 7, SplitFractions::default()).unwrap();
        let c = Split::seeded(&index, 8, SplitFractions::default()).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!((a.train.len(), a.val.len(), a.test.len()), (14, 2, 4));
        let mut all: Vec<usize> = [&a.train[..], &a.val[..], &a.test[..]].concat();
        all.sort_unstable();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        // The shuffle really moved identities: train is not just the first 14 names.
        assert_ne!(a.train, (0..14).collect::<Vec<_>>());
    }

    #[test]
    fn tiny_dataset_still_gets_a_val_and_test_identity() {
        let (_dir, index) = index(3);
        let s = Split::seeded(&index, 0, SplitFractions::default()).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (1, 1, 1));
        assert!(Split::seeded(
            &index,
            0,
            SplitFractions {
                train: 0.7,
                val: 0.2,
                test: 0.2
            }
        )
        .is_err());
    }

    #[test]
    fn split_files_round_trip_and_overlap_is_an_error() {
        let (dir, index) = index(10);
        let s = Split::seeded(&index, 3, SplitFractions::default()).unwrap();
        let out = dir.path().join("splits");
        s.write_files(&index, &out).unwrap();
        let back = Split::from_files(
            &index,
            out.join("train.txt"),
            out.join("val.txt"),
            out.join("test.txt"),
        )
        .unwrap();
        assert_eq!(back, s);

        let train_name = index.identities()[s.train[0]].name.clone();
        let mut test = fs::read_to_string(out.join("test.txt")).unwrap();
        test.push_str(&format!("# comment\n\nunknown_id\n{train_name}\n"));
        fs::write(out.join("test.txt"), test).unwrap();
        let err = Split::from_files(
            &index,
            out.join("train.txt"),
            out.join("val.txt"),
            out.join("test.txt"),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::SplitOverlap { .. }), "{msg}");
        assert!(msg.contains(&train_name) && msg.contains("train") && msg.contains("test"));
    }

    #[test]
    fn check_disjoint_rejects_overlap() {
        let (_dir, index) = index(4);
        let bad = Split {
            train: vec![0, 1],
            val: vec![2],
            test: vec![1, 3],
        };
        let err = bad.check_disjoint(&index).unwrap_err().to_string();
        assert!(err.contains(&index.identities()[1].name), "{err}");
    }
}
