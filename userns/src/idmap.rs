//! ID mappings (OCI `linux.uidMappings`/`gidMappings`) and host ID ranges.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kernel's limit of extents in one `uid_map`/`gid_map`.
pub const MAX_EXTENTS: usize = 340;
/// The largest usable ID: `(uid_t)-1` is invalid, and the kernel refuses an
/// extent whose first ID + size wraps past it.
pub const LAST_ID: u32 = u32::MAX - 1;
/// `uid_map`/`gid_map` must be written in one write of less than a page.
pub const MAX_MAP_TEXT: usize = 4095;

/// One mapping extent: container IDs `container_id..+size` are host IDs
/// `host_id..+size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// User or group IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    Uid,
    Gid,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Uid => "uid",
            IdKind::Gid => "gid",
        })
    }
}

/// Why a set of mappings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("{kind} mappings are empty")]
    Empty { kind: IdKind },
    #[error("{count} {kind} mapping extents exceed the kernel's limit of {MAX_EXTENTS}")]
    TooMany { kind: IdKind, count: usize },
    #[error("{kind} mapping {index} has size 0")]
    ZeroSize { kind: IdKind, index: usize },
    #[error("{kind} mapping {index} ({side} ID {start} + size {size}) goes past {LAST_ID}, the largest ID (4294967295 is the invalid ID -1)")]
    Overflow {
        kind: IdKind,
        index: usize,
        side: &'static str,
        start: u32,
        size: u32,
    },
    #[error("{kind} mappings {a} and {b} overlap on the {side} side")]
    Overlap {
        kind: IdKind,
        a: usize,
        b: usize,
        side: &'static str,
    },
    #[error("{kind} mappings are {len} bytes as text, over the kernel's one-write limit of {MAX_MAP_TEXT}")]
    TextTooLong { kind: IdKind, len: usize },
}

/// The text the kernel expects in `/proc/PID/uid_map` (one line per extent).
pub fn map_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect()
}

/// Checks mappings as the kernel would, with errors naming the extent:
/// non-empty, at most 340 extents, no zero size, no extent past
/// [`LAST_ID`], no overlap on
/// either side (adjacent extents are fine), and short enough to write.
pub fn validate_mappings(kind: IdKind, maps: &[IdMap]) -> Result<(), MappingError> {
    if maps.is_empty() {
        return Err(MappingError::Empty { kind });
    }
    if maps.len() > MAX_EXTENTS {
        return Err(MappingError::TooMany {
            kind,
            count: maps.len(),
        });
    }
    for (index, m) in maps.iter().enumerate() {
        if m.size == 0 {
            return Err(MappingError::ZeroSize { kind, index });
        }
        for (side, start) in [("container", m.container_id), ("host", m.host_id)] {
            // The kernel: `first + count <= first` (u32) is EINVAL.
            if u64::from(start) + u64::from(m.size) > u64::from(u32::MAX) {
                return Err(MappingError::Overflow {
                    kind,
                    index,
                    side,
                    start,
                    size: m.size,
                });
            }
        }
    }
    for side in ["container", "host"] {
        let start = |m: &IdMap| {
            u64::from(if side == "host" {
                m.host_id
            } else {
                m.container_id
            })
        };
        let mut sorted: Vec<usize> = (0..maps.len()).collect();
        sorted.sort_by_key(|&i| start(&maps[i]));
        for w in sorted.windows(2) {
            let (a, b) = (&maps[w[0]], &maps[w[1]]);
            if start(a) + u64::from(a.size) > start(b) {
                return Err(MappingError::Overlap {
                    kind,
                    a: w[0].min(w[1]),
                    b: w[0].max(w[1]),
                    side,
                });
            }
        }
    }
    let len = map_text(maps).len();
    if len > MAX_MAP_TEXT {
        return Err(MappingError::TextTooLong { kind, len });
    }
    Ok(())
}

/// A range of host IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdRange {
    pub base: u32,
    pub size: u32,
}

impl IdRange {
    /// One past the last ID.
    pub fn end(&self) -> u64 {
        u64::from(self.base) + u64::from(self.size)
    }

    pub fn contains(&self, id: u32) -> bool {
        id >= self.base && u64::from(id) < self.end()
    }

    pub fn overlaps(&self, other: &IdRange) -> bool {
        u64::from(self.base) < other.end() && u64::from(other.base) < self.end()
    }

    /// The whole range at container ID 0.
    pub fn to_map(&self) -> IdMap {
        IdMap {
            container_id: 0,
            host_id: self.base,
            size: self.size,
        }
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.base, self.end() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: u32, h: u32, s: u32) -> IdMap {
        IdMap {
            container_id: c,
            host_id: h,
            size: s,
        }
    }

    #[test]
    fn valid_mappings() {
        validate_mappings(IdKind::Uid, &[m(0, 100000, 65536)]).expect("one extent");
        validate_mappings(IdKind::Uid, &[m(0, 1000, 10), m(10, 1010, 5)]).expect("adjacent");
        let many: Vec<IdMap> = (0..340).map(|i| m(i, i + 100, 1)).collect();
        validate_mappings(IdKind::Gid, &many).expect("340 extents");
    }

    #[test]
    fn invalid_mappings_name_the_extent() {
        let k = IdKind::Uid;
        let cases: Vec<(Vec<IdMap>, MappingError)> = vec![
            (vec![], MappingError::Empty { kind: k }),
            (
                (0..341).map(|i| m(i, i + 100, 1)).collect(),
                MappingError::TooMany {
                    kind: k,
                    count: 341,
                },
            ),
            (
                vec![m(0, 1000, 1), m(5, 2000, 0)],
                MappingError::ZeroSize { kind: k, index: 1 },
            ),
            (
                vec![m(u32::MAX, 1000, 2)],
                MappingError::Overflow {
                    kind: k,
                    index: 0,
                    side: "container",
                    start: u32::MAX,
                    size: 2,
                },
            ),
            (
                vec![m(0, u32::MAX - 1, 3)],
                MappingError::Overflow {
                    kind: k,
                    index: 0,
                    side: "host",
                    start: u32::MAX - 1,
                    size: 3,
                },
            ),
            (
                vec![m(0, 1000, 10), m(20, 3000, 1), m(9, 2000, 2)],
                MappingError::Overlap {
                    kind: k,
                    a: 0,
                    b: 2,
                    side: "container",
                },
            ),
            (
                vec![m(0, 1000, 10), m(10, 1005, 10)],
                MappingError::Overlap {
                    kind: k,
                    a: 0,
                    b: 1,
                    side: "host",
                },
            ),
        ];
        for (maps, want) in cases {
            assert_eq!(validate_mappings(k, &maps), Err(want.clone()), "{maps:?}");
            assert!(!want.to_string().is_empty());
        }
        let long: Vec<IdMap> = (0..340)
            .map(|i| m(i * 10, 4_000_000_000 + i * 10, 1))
            .collect();
        assert!(matches!(
            validate_mappings(k, &long),
            Err(MappingError::TextTooLong { .. })
        ));
        let e = validate_mappings(k, &[m(0, 1000, 1), m(5, 2000, 0)]).expect_err("zero");
        assert_eq!(e.to_string(), "uid mapping 1 has size 0");
        // The texts that reach containerd, each naming the extent and side.
        let texts: Vec<(Vec<IdMap>, &str)> = vec![
            (
                vec![m(0, 1000, 10), m(5, 5000, 10)],
                "gid mappings 0 and 1 overlap on the container side",
            ),
            (
                vec![m(0, 1000, 10), m(100, 1009, 1)],
                "gid mappings 0 and 1 overlap on the host side",
            ),
            (
                vec![m(0, 1000, 1), m(4_294_967_290, 2000, 7)],
                "gid mapping 1 (container ID 4294967290 + size 7) goes past 4294967294, the largest ID (4294967295 is the invalid ID -1)",
            ),
            (
                vec![m(0, u32::MAX, 1)],
                "gid mapping 0 (host ID 4294967295 + size 1) goes past 4294967294, the largest ID (4294967295 is the invalid ID -1)",
            ),
            (vec![m(0, u32::MAX - 1, 1)], ""),
            (
                (0..400).map(|i| m(i, i + 100, 1)).collect(),
                "400 gid mapping extents exceed the kernel's limit of 340",
            ),
            (vec![], "gid mappings are empty"),
        ];
        for (maps, want) in texts {
            let got = validate_mappings(IdKind::Gid, &maps);
            if want.is_empty() {
                // An extent ending at the last valid ID fits.
                got.expect("ends at LAST_ID");
            } else {
                assert_eq!(got.expect_err(want).to_string(), want);
            }
        }
    }

    #[test]
    fn ranges() {
        let a = IdRange {
            base: 100,
            size: 10,
        };
        let b = IdRange {
            base: 110,
            size: 10,
        };
        assert!(!a.overlaps(&b) && !b.overlaps(&a));
        assert!(a.overlaps(&IdRange { base: 109, size: 1 }));
        assert!(a.contains(109) && !a.contains(110) && !a.contains(99));
        assert_eq!(a.end(), 110);
        assert_eq!(a.to_map(), m(0, 100, 10));
        assert_eq!(a.to_string(), "100-109");
    }
}
