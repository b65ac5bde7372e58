//! Fuzzing the tar reader and the WebDataset sample grouping on stable Rust, as property
//! tests (see [`crate::fuzz`]; `PIPELINE_FUZZ_CASES` sets the number of cases): arbitrary
//! bytes, and valid archives of a few members mutated (bytes flipped, inserted, removed,
//! the archive cut short, a header's size field rewritten, its checksum fixed or not), fed
//! in chunks of any size. No input may panic, hang or make the reader allocate more than a
//! small multiple of the input: sizes are the archive's word, not the reader's.

use bytes::Bytes;
use proptest::prelude::*;

use super::tar::{TarReader, TarWriter, MAX_MEMBER_BYTES};
use super::webdataset::samples_of_chunks;
use crate::fuzz::{bounded, config};

const BLOCK: usize = 512;

/// What the reader may allocate for an input of `n` bytes, whatever it claims.
fn limit(n: usize) -> u64 {
    16 * n as u64 + (1 << 20)
}

/// Reads `bytes` in chunks of `chunk` bytes; checks that every file delivered lies within
/// the input and that an error is returned again on later calls.
fn read(bytes: &[u8], chunk: usize) {
    bounded("TarReader", limit(bytes.len()), || {
        let mut r = TarReader::new();
        let mut delivered = 0usize;
        for c in bytes.chunks(chunk.max(1)) {
            r.push(c);
            loop {
                match r.next_entry() {
                    Ok(Some(e)) => {
                        delivered += e.data.len();
                        assert!(delivered <= bytes.len());
                        assert!(e.offset < bytes.len() as u64);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        assert!(e.offset <= bytes.len() as u64);
                        assert_eq!(r.next_entry().unwrap_err().offset, e.offset);
                        assert!(r.finish().is_err());
                        return;
                    }
                }
            }
        }
        let _ = r.finish();
    });
}

/// Groups the samples of `bytes` (in chunks of `chunk`): whatever they are, the samples'
/// fields lie within the input.
fn group(bytes: &[u8], chunk: usize) {
    bounded("webdataset grouping", limit(bytes.len()), || {
        let chunks = bytes
            .chunks(chunk.max(1))
            .map(Bytes::copy_from_slice)
            .collect();
        let mut total = 0;
        for s in samples_of_chunks(chunks).into_iter().flatten() {
            total += s.byte_len();
        }
        assert!(total <= bytes.len());
    });
}

/// A valid archive of `members` (key, extension, length of data).
fn archive(members: &[(u8, &str, usize)]) -> Vec<u8> {
    let mut w = TarWriter::new();
    for (i, (key, ext, len)) in members.iter().enumerate() {
        let name = if *key == 9 {
            format!("{}/s{key}.{ext}", "d".repeat(110))
        } else {
            format!("shard/s{key}.{ext}")
        };
        w.append(&name, &vec![i as u8; *len]);
    }
    w.finish()
}

/// Rewrites the size field of the header at `at` (and its checksum when `fix_sum`).
fn set_size(bytes: &mut [u8], at: usize, field: &[u8; 12], fix_sum: bool) {
    if at + BLOCK > bytes.len() {
        return;
    }
    let h = &mut bytes[at..at + BLOCK];
    h[124..136].copy_from_slice(field);
    if fix_sum {
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    }
}

/// A size field: octal, base-256 (GNU), or garbage.
fn size_field() -> impl Strategy<Value = [u8; 12]> {
    prop_oneof![
        any::<u64>().prop_map(|n| {
            let mut f = [0u8; 12];
            let text = format!("{:011o}", n % (1 << 33));
            f[..11].copy_from_slice(text.as_bytes());
            f
        }),
        (any::<u64>(), any::<bool>()).prop_map(|(n, neg)| {
            let mut f = [0u8; 12];
            f[0] = if neg { 0xff } else { 0x80 };
            f[4..].copy_from_slice(&n.to_be_bytes());
            f
        }),
        any::<[u8; 12]>(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Remove(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
    Size(prop::sample::Index, [u8; 12], bool),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        1 => (any::<prop::sample::Index>(), proptest::collection::vec(any::<u8>(), 1..600))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<prop::sample::Index>(), 1usize..1100).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        3 => (any::<prop::sample::Index>(), size_field(), any::<bool>())
            .prop_map(|(i, f, fix)| Mutation::Size(i, f, fix)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Flip(i, b) => {
            let i = i.index(bytes.len());
            bytes[i] ^= b | 1;
        }
        Mutation::Insert(i, b) => {
            let i = i.index(bytes.len() + 1);
            bytes.splice(i..i, b.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let i = i.index(bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
        Mutation::Size(i, field, fix) => {
            let at = i.index(bytes.len().div_ceil(BLOCK)) * BLOCK;
            set_size(bytes, at, field, *fix);
        }
    }
}

fn members() -> impl Strategy<Value = Vec<(u8, &'static str, usize)>> {
    proptest::collection::vec(
        (
            0u8..10,
            prop::sample::select(vec!["jpg", "json", "txt", "cls", "tar.gz", ""]),
            prop_oneof![0usize..20, 0usize..1500],
        ),
        0..7,
    )
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fuzz_tar_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        chunk in 1usize..2000,
    ) {
        read(&bytes, chunk);
        group(&bytes, chunk);
    }

    /// Arbitrary blocks that are headers with a valid checksum: the parser's paths past the
    /// checksum are reached far more often than by arbitrary bytes.
    #[test]
    fn fuzz_tar_checksummed_headers(
        blocks in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), BLOCK), size_field(), prop::sample::select(b"0\x0025LKxgS7".to_vec())),
            1..5,
        ),
        chunk in 1usize..2000,
    ) {
        let mut bytes = Vec::new();
        for (mut h, size, kind) in blocks {
            h[156] = kind;
            h[257..263].copy_from_slice(b"ustar\0");
            bytes.extend_from_slice(&h);
            let at = bytes.len() - BLOCK;
            set_size(&mut bytes, at, &size, true);
        }
        bytes.resize(bytes.len() + 2 * BLOCK, 0);
        read(&bytes, chunk);
        group(&bytes, chunk);
    }

    #[test]
    fn fuzz_tar_mutated_archives(
        members in members(),
        mutations in proptest::collection::vec(mutation(), 1..4),
        chunk in prop_oneof![1usize..64, 1usize..5000],
    ) {
        let mut bytes = archive(&members);
        for m in &mutations {
            apply(&mut bytes, m);
        }
        read(&bytes, chunk);
        group(&bytes, chunk);
    }

    /// Unmutated archives: every member comes out, grouped by key.
    #[test]
    fn fuzz_tar_valid_archives_read_whole(members in members(), chunk in 1usize..3000) {
        let bytes = archive(&members);
        let mut r = TarReader::new();
        let mut n = 0;
        for c in bytes.chunks(chunk) {
            r.push(c);
            while let Some(e) = r.next_entry().unwrap() {
                prop_assert_eq!(e.data.len(), members[n].2);
                n += 1;
            }
        }
        r.finish().unwrap();
        prop_assert_eq!(n, members.len());
        group(&bytes, chunk);
    }
}

/// A member claiming 1 TiB, and one claiming just under the limit, in a 2 KiB input: the
/// first is refused at its header, the second is truncated at the end; neither is allocated.
#[test]
fn a_claimed_size_far_over_the_input_is_not_allocated() {
    for claim in [1u64 << 40, MAX_MEMBER_BYTES, (1 << 33) - 1] {
        let mut bytes = archive(&[(1, "jpg", 1000)]);
        bytes.truncate(2048);
        let mut field = [0u8; 12];
        if claim < 1 << 33 {
            field[..11].copy_from_slice(format!("{claim:011o}").as_bytes());
        } else {
            field[0] = 0x80;
            field[4..].copy_from_slice(&claim.to_be_bytes());
        }
        set_size(&mut bytes, 0, &field, true);
        let err = bounded("a claimed size", 1 << 20, || {
            let mut r = TarReader::new();
            r.push(&bytes);
            match r.next_entry() {
                Err(e) => e,
                Ok(None) => r.finish().unwrap_err(),
                Ok(Some(e)) => panic!("a member of {} bytes out of 2 KiB", e.data.len()),
            }
        });
        assert_eq!(err.offset, 0, "{}", err.message);
        group(&bytes, 2048);
    }
}

/// A pax `size` of 1 GiB (the limit) for a member of a 3 KiB input: the reader waits for
/// the data, then fails at the end as truncated, allocating nothing like the claim.
#[test]
fn a_pax_size_far_over_the_input_is_not_allocated() {
    // A pax record's length counts the whole record, its own digits included.
    let record = format!("19 size={MAX_MEMBER_BYTES}\n");
    assert_eq!(record.len(), 19);
    let mut w = TarWriter::new();
    w.append("pax", record.as_bytes());
    w.append("s1.jpg", &[1u8; 100]);
    let mut bytes = w.finish();
    bytes[156] = b'x';
    let mut field = [0u8; 12];
    field[..11].copy_from_slice(format!("{:011o}", record.len()).as_bytes());
    set_size(&mut bytes, 0, &field, true);
    let err = bounded("a pax size", 1 << 20, || {
        let mut r = TarReader::new();
        r.push(&bytes);
        assert!(r.next_entry().unwrap().is_none(), "waits for the data");
        r.finish().unwrap_err()
    });
    assert_eq!(err.offset, 0, "{}", err.message);
    assert!(err.message.contains("truncated"), "{}", err.message);
    group(&bytes, 700);
}
