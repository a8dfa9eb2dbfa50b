//! Duplicate keys and emails (case-insensitive) across all rows, found by sorting: every
//! record sharing one gets a problem naming the other line.

use xxhash_rust::xxh3::xxh3_64;

use super::CsvProblem;
use super::row::RowProblem;
use crate::model::User;
use crate::source::rules::fold_into;

/// The first 8 bytes of `bytes`, zero-padded, big-endian: ordering by it then by the whole
/// value is ordering by the whole value, and most comparisons stop at it (the rest are a
/// `memcmp`).
#[inline]
pub(super) fn prefix(bytes: &[u8]) -> u64 {
    let mut p = [0u8; 8];
    let n = bytes.len().min(8);
    p[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(p)
}

/// A duplicate found: ((index into the users, problem), whether it is the first occurrence,
/// which a failing read does not list).
pub(super) type Duplicate = ((usize, RowProblem), bool);

/// Sorts the users with a key by key (then by line) and reports each repeated key, naming
/// the line of its first occurrence (and the first occurrence, naming the second line).
/// Returns the order (indexes into `users`).
pub(super) fn duplicate_keys(
    users: &[User],
    lines: &[u64],
    column: &str,
) -> (Vec<usize>, Vec<Duplicate>) {
    let mut order: Vec<(u64, usize)> = users
        .iter()
        .enumerate()
        .filter(|(_, u)| !u.key.is_empty())
        .map(|(i, u)| (prefix(u.key.as_bytes()), i))
        .collect();
    let key = |e: &(u64, usize)| users[e.1].key.as_str();
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| key(a).cmp(key(b)))
            .then(a.1.cmp(&b.1))
    });
    let mut problems: Vec<Duplicate> = Vec::new();
    let mut first = 0;
    for j in 1..order.len() {
        if order[j].0 == order[first].0 && key(&order[j]) == key(&order[first]) {
            let k = key(&order[j]);
            if j == first + 1 {
                let (a, b) = (order[first].1, order[j].1);
                let p = CsvProblem::at(
                    lines[a],
                    Some(column),
                    format!("duplicate key {k:?} (again on line {})", lines[b]),
                );
                problems.push(((a, RowProblem::new(p, k.as_bytes())), true));
            }
            let p = CsvProblem::at(
                lines[order[j].1],
                Some(column),
                format!(
                    "duplicate key {k:?} (first on line {})",
                    lines[order[first].1]
                ),
            );
            problems.push(((order[j].1, RowProblem::new(p, k.as_bytes())), false));
        } else {
            first = j;
        }
    }
    (order.into_iter().map(|e| e.1).collect(), problems)
}

/// Reports each email that an earlier row already has, compared as [`email_fold`](crate::model::email_fold) does.
///
/// Sorts `(hash of the folded email, index)` pairs: equal emails end up next to each other,
/// earliest row first; within a run of equal hashes the emails themselves are compared, so a
/// hash collision is never taken for a duplicate. ASCII emails are folded into a reused
/// buffer, without allocating.
pub(super) fn duplicate_emails(users: &[User], lines: &[u64], column: &str) -> Vec<Duplicate> {
    let mut buf: Vec<u8> = Vec::new();
    let mut order: Vec<(u64, usize)> = Vec::with_capacity(users.len());
    for (i, u) in users.iter().enumerate() {
        if !u.email.is_empty() {
            order.push((xxh3_64(fold_into(&u.email, &mut buf)), i));
        }
    }
    order.sort_unstable();
    let mut problems: Vec<Duplicate> = Vec::new();
    // The distinct folded emails of the current run of equal hashes, with their first user:
    // one entry unless the hash collides, however often an email repeats.
    let mut distinct: Vec<(Vec<u8>, usize, bool)> = Vec::new();
    let mut run = 0;
    while run < order.len() {
        let mut end = run + 1;
        while end < order.len() && order[end].0 == order[run].0 {
            end += 1;
        }
        if end - run > 1 {
            distinct.clear();
            for &(_, b) in &order[run..end] {
                let folded = fold_into(&users[b].email, &mut buf);
                match distinct.iter_mut().find(|(f, _, _)| f.as_slice() == folded) {
                    Some((_, a, repeated)) => {
                        let a = *a;
                        if !*repeated {
                            *repeated = true;
                            let e = &users[a].email;
                            let p = CsvProblem::at(
                                lines[a],
                                Some(column),
                                format!("duplicate email {e:?} (again on line {})", lines[b]),
                            );
                            problems.push(((a, RowProblem::new(p, e.as_bytes())), true));
                        }
                        let e = &users[b].email;
                        let p = CsvProblem::at(
                            lines[b],
                            Some(column),
                            format!("duplicate email {e:?} (first on line {})", lines[a]),
                        );
                        problems.push(((b, RowProblem::new(p, e.as_bytes())), false));
                    }
                    None => distinct.push((folded.to_vec(), b, false)),
                }
            }
        }
        run = end;
    }
    problems
}

/// Reorders `items` so that `items[i]` becomes the old `items[order[i]]`; `order` must be a
/// permutation of `0..items.len()` (anything else leaves `items` in some order, never
/// loses an item). Linear, in place.
pub(super) fn permute<T>(items: &mut [T], mut order: Vec<usize>) {
    if order.len() != items.len() {
        return;
    }
    for start in 0..order.len() {
        let mut cur = start;
        // Follow the cycle through `start`, marking each visited slot with its own index.
        loop {
            let next = order[cur];
            order[cur] = cur;
            if next == start || next == cur || next >= items.len() {
                break;
            }
            items.swap(cur, next);
            cur = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_reorders_in_place() {
        let cases: &[(&[usize], &str)] = &[
            (&[], ""),
            (&[0], "a"),
            (&[2, 0, 1], "cab"),
            (&[1, 0, 3, 2], "badc"),
            (&[4, 3, 2, 1, 0], "edcba"),
            (&[0, 1, 2, 3, 4], "abcde"),
        ];
        for (order, want) in cases {
            let mut items: Vec<char> = "abcde".chars().take(order.len()).collect();
            permute(&mut items, order.to_vec());
            assert_eq!(items.iter().collect::<String>(), *want, "{order:?}");
        }
        // a wrong order never loses items
        let mut items = vec!['a', 'b', 'c'];
        permute(&mut items, vec![0, 0, 7]);
        items.sort_unstable();
        assert_eq!(items, ['a', 'b', 'c']);
        permute(&mut items, vec![1]);
        assert_eq!(items, ['a', 'b', 'c']);
    }

    #[test]
    fn sort_prefix_orders_like_the_bytes() {
        let words = [
            "abcdefgh",
            "abcdefgh1",
            "abcdefgi",
            "",
            "a",
            "a\0",
            "a\0b",
            "ab",
            "abcdefgh",
            "abcdefghi",
            "abcdefgh\0",
            "b",
            "\u{e9}",
        ];
        for x in words {
            for y in words {
                let (px, py) = (prefix(x.as_bytes()), prefix(y.as_bytes()));
                if px != py {
                    assert_eq!(px.cmp(&py), x.cmp(y), "{x:?} {y:?}");
                }
            }
        }
    }
}
