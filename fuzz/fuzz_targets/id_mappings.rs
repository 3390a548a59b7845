//! `userns::validate_mappings` over arbitrary extents: it never panics, and
//! it accepts exactly the mappings a brute-force check finds valid
//! (non-empty, at most MAX_EXTENTS, no zero size, first + size within u32
//! on both sides as the kernel checks it,
//! no two extents overlapping on either side, short enough for one write);
//! each error it gives is true of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use userns::{map_text, validate_mappings, IdKind, IdMap, MappingError, MAX_EXTENTS, MAX_MAP_TEXT};

fn end(start: u32, size: u32) -> u64 {
    u64::from(start) + u64::from(size)
}

fn overlaps(a: &IdMap, b: &IdMap, side: &str) -> bool {
    let (sa, sb) = if side == "host" {
        (a.host_id, b.host_id)
    } else {
        (a.container_id, b.container_id)
    };
    u64::from(sa) < end(sb, b.size) && u64::from(sb) < end(sa, a.size)
}

fn valid(maps: &[IdMap]) -> bool {
    if maps.is_empty() || maps.len() > MAX_EXTENTS {
        return false;
    }
    for m in maps {
        // The kernel refuses an extent whose first + count wraps u32.
        if m.size == 0
            || end(m.container_id, m.size) > u64::from(u32::MAX)
            || end(m.host_id, m.size) > u64::from(u32::MAX)
        {
            return false;
        }
    }
    for (i, a) in maps.iter().enumerate() {
        for b in &maps[i + 1..] {
            if overlaps(a, b, "container") || overlaps(a, b, "host") {
                return false;
            }
        }
    }
    map_text(maps).len() <= MAX_MAP_TEXT
}

fuzz_target!(|input: (bool, Vec<(u32, u32, u32)>)| {
    let (gid, raw) = input;
    let kind = if gid { IdKind::Gid } else { IdKind::Uid };
    // Small sizes and nearby starts as well as arbitrary ones, so that
    // overlaps and adjacency are found, not only overflows.
    let maps: Vec<IdMap> = raw
        .iter()
        .map(|&(c, h, s)| IdMap {
            container_id: if c & 1 == 0 { c >> 20 } else { c },
            host_id: if h & 1 == 0 { h >> 20 } else { h },
            size: if s & 1 == 0 { s >> 24 } else { s },
        })
        .collect();
    let got = validate_mappings(kind, &maps);
    assert_eq!(got.is_ok(), valid(&maps), "{maps:?}: {got:?}");
    let Err(e) = got else { return };
    assert!(
        e.to_string().starts_with(&kind.to_string()) || matches!(e, MappingError::TooMany { .. })
    );
    match e {
        MappingError::Empty { .. } => assert!(maps.is_empty()),
        MappingError::TooMany { count, .. } => {
            assert!(count == maps.len() && count > MAX_EXTENTS)
        }
        MappingError::ZeroSize { index, .. } => assert_eq!(maps[index].size, 0),
        MappingError::Overflow {
            index,
            side,
            start,
            size,
            ..
        } => {
            let m = maps[index];
            assert_eq!(size, m.size);
            assert_eq!(
                start,
                if side == "host" {
                    m.host_id
                } else {
                    m.container_id
                }
            );
            assert!(end(start, size) > u64::from(u32::MAX));
        }
        MappingError::Overlap { a, b, side, .. } => {
            assert!(a < b, "{a} {b}");
            assert!(
                overlaps(&maps[a], &maps[b], side),
                "{maps:?} {a} {b} {side}"
            );
        }
        MappingError::TextTooLong { len, .. } => {
            assert!(len > MAX_MAP_TEXT && len == map_text(&maps).len())
        }
    }
});
