//! Mutations: AFL-style byte edits (flips, interesting integers, range insert/delete/duplicate,
//! splices, dictionary tokens, truncation) and JSON tree edits that keep a document parseable
//! while changing what it means.

use fastrand::Rng;
use serde_json::{Map, Number, Value};

/// Integers at the edges of every width a decoder might use.
pub const INTERESTING: [u64; 20] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX - 1,
    u64::MAX,
    1_000_000_000,
    86_400,
];

/// Protobuf varint of `n`.
pub fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// One interesting integer in a random representation: varint, little/big endian of 2, 4 or 8
/// bytes, or decimal text (possibly negative or overflowing).
fn interesting_bytes(rng: &mut Rng) -> Vec<u8> {
    let n = INTERESTING[rng.usize(..INTERESTING.len())];
    let n = if rng.bool() { n } else { n.wrapping_add(rng.u64(..3)).wrapping_sub(1) };
    match rng.u8(..8) {
        0 | 1 => varint(n),
        2 => (n as u16).to_le_bytes().to_vec(),
        3 => (n as u32).to_le_bytes().to_vec(),
        4 => n.to_le_bytes().to_vec(),
        5 => n.to_be_bytes().to_vec(),
        6 => format!("-{n}").into_bytes(),
        _ => match rng.u8(..4) {
            0 => format!("{n}0").into_bytes(),
            1 => format!("{n}e{}", rng.u32(..400)).into_bytes(),
            _ => n.to_string().into_bytes(),
        },
    }
}

fn range(rng: &mut Rng, len: usize) -> (usize, usize) {
    if len == 0 {
        return (0, 0);
    }
    let start = rng.usize(..len);
    let max = (len - start).min(if rng.u8(..4) == 0 { len } else { 16 });
    (start, start + rng.usize(1..=max.max(1)).min(len - start))
}

/// Applies 1 to 8 byte-level edits; the result stays below `max_len` bytes.
pub fn bytes(rng: &mut Rng, data: &mut Vec<u8>, donors: &[Vec<u8>], dictionary: &[&[u8]], max_len: usize) {
    let edits = 1 << rng.u32(..4);
    for _ in 0..rng.usize(1..=edits) {
        let len = data.len();
        match rng.u8(..14) {
            0 if len > 0 => {
                let i = rng.usize(..len);
                data[i] ^= 1 << rng.u32(..8);
            }
            1 if len > 0 => {
                let i = rng.usize(..len);
                data[i] = rng.u8(..);
            }
            2 if len > 0 => {
                let i = rng.usize(..len);
                data[i] = [0x00, 0x01, 0x7f, 0x80, 0xff, 0xc0, 0xfe, b'"', b'\\', b'{', b'[', b'.', b':', b'-'][rng.usize(..14)];
            }
            3 => {
                let at = rng.usize(..=len);
                let mut noise = vec![0u8; rng.usize(1..=16)];
                rng.fill(&mut noise);
                data.splice(at..at, noise);
            }
            4 if len > 0 => {
                let (a, b) = range(rng, len);
                data.drain(a..b);
            }
            5 if len > 0 => {
                // Duplicate a range, sometimes many times (repetition finds quadratic paths).
                let (a, b) = range(rng, len);
                let piece = data[a..b].to_vec();
                let times = if rng.u8(..4) == 0 { rng.usize(2..256) } else { 1 };
                let at = rng.usize(..=len);
                data.splice(at..at, piece.iter().copied().cycle().take(piece.len() * times));
            }
            6 if !donors.is_empty() => {
                // Splice: a range of another corpus item, inserted or overwriting.
                let donor = &donors[rng.usize(..donors.len())];
                let (a, b) = range(rng, donor.len());
                let at = rng.usize(..=len);
                if rng.bool() {
                    data.splice(at..at, donor[a..b].iter().copied());
                } else {
                    let end = (at + (b - a)).min(len);
                    data.splice(at..end, donor[a..b].iter().copied());
                }
            }
            7 if len > 0 => data.truncate(rng.usize(..len)),
            8 | 9 => {
                let at = rng.usize(..=len);
                let value = interesting_bytes(rng);
                if rng.bool() || at == len {
                    data.splice(at..at, value);
                } else {
                    let end = (at + value.len()).min(len);
                    data.splice(at..end, value);
                }
            }
            10 | 11 if !dictionary.is_empty() => {
                let token = dictionary[rng.usize(..dictionary.len())];
                let at = rng.usize(..=len);
                data.splice(at..at, token.iter().copied());
            }
            12 if len > 1 => {
                // Swap two ranges' first bytes: reorders fields and brackets.
                let (i, j) = (rng.usize(..len), rng.usize(..len));
                data.swap(i, j);
            }
            _ => {
                let at = rng.usize(..=len);
                data.insert(at, rng.u8(..));
            }
        }
        data.truncate(max_len);
    }
}

/// A value meant to hit edge cases in whatever reads it.
pub fn interesting_value(rng: &mut Rng, strings: &[&str]) -> Value {
    match rng.u8(..16) {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => Value::Number(Number::from(INTERESTING[rng.usize(..INTERESTING.len())])),
        3 => Value::Number(Number::from([i64::MIN, -1, -86_400, i64::MAX][rng.usize(..4)])),
        4 => Number::from_f64([0.5, -0.0, 1e308, -1e308, 1.8446744073709552e19, 9.3e18, 5e-324, 1e20][rng.usize(..8)])
            .map_or(Value::Null, Value::Number),
        5 => Value::String(INTERESTING[rng.usize(..INTERESTING.len())].to_string()),
        6 => Value::String(
            ["", " ", "-1", "NaN", "Infinity", "-Infinity", "1e400", "0x10", "\u{0}", "é\u{feff}", "\u{10ffff}"][rng.usize(..11)].into(),
        ),
        7 => Value::String("A".repeat([8, 16, 17, 32, 33, 129, 4096, 70_000][rng.usize(..8)])),
        8 => Value::String("0".repeat([15, 16, 31, 32, 33, 64][rng.usize(..6)])),
        9 => Value::Array(Vec::new()),
        10 => Value::Object(Map::new()),
        11 => Value::Array((0..rng.usize(1..2000)).map(|i| Value::from(i as u64)).collect()),
        _ if !strings.is_empty() => Value::String(strings[rng.usize(..strings.len())].to_string()),
        _ => Value::String(String::new()),
    }
}

/// A random node of `value` (the root included), reached by a random walk.
fn pick<'a>(rng: &mut Rng, value: &'a mut Value) -> &'a mut Value {
    let children = match value {
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        _ => 0,
    };
    if children == 0 || rng.u8(..4) == 0 {
        return value;
    }
    let i = rng.usize(..children);
    match value {
        Value::Array(a) => pick(rng, &mut a[i]),
        Value::Object(o) => pick(rng, o.values_mut().nth(i).expect("index below len")),
        _ => unreachable!("only containers have children"),
    }
}

/// A random node of a donor, copied.
fn donor_node(rng: &mut Rng, donors: &[Value]) -> Option<Value> {
    if donors.is_empty() {
        return None;
    }
    let mut donor = donors[rng.usize(..donors.len())].clone();
    Some(pick(rng, &mut donor).clone())
}

/// Applies 1 to 4 tree edits: replace a node (with an interesting value or a donor's subtree),
/// delete or insert a member, repeat array elements, wrap a node, or retype a scalar.
pub fn json(rng: &mut Rng, value: &mut Value, donors: &[Value], keys: &[&str], strings: &[&str]) {
    for _ in 0..rng.usize(1..=4) {
        let node = pick(rng, value);
        match rng.u8(..9) {
            0 | 1 => *node = interesting_value(rng, strings),
            2 => {
                if let Some(d) = donor_node(rng, donors) {
                    *node = d;
                }
            }
            3 => match node {
                Value::Object(o) if !o.is_empty() => {
                    let key = o.keys().nth(rng.usize(..o.len())).cloned().expect("index below len");
                    o.remove(&key);
                }
                Value::Array(a) if !a.is_empty() => {
                    a.remove(rng.usize(..a.len()));
                }
                _ => *node = Value::Null,
            },
            4 => match node {
                Value::Object(o) => {
                    let key = if !keys.is_empty() && rng.u8(..4) != 0 {
                        keys[rng.usize(..keys.len())].to_string()
                    } else {
                        ["", "a", "__proto__", "\u{0}", "k\"ey"][rng.usize(..5)].to_string()
                    };
                    let v = donor_node(rng, donors).filter(|_| rng.bool()).unwrap_or_else(|| interesting_value(rng, strings));
                    o.insert(key, v);
                }
                Value::Array(a) => {
                    let v = if a.is_empty() || rng.bool() { interesting_value(rng, strings) } else { a[rng.usize(..a.len())].clone() };
                    a.insert(rng.usize(..=a.len()), v);
                }
                _ => *node = Value::Array(vec![node.take()]),
            },
            5 => {
                if let Value::Array(a) = node {
                    if let Some(first) = a.first().cloned() {
                        // Up to about a MiB of copies.
                        let size = serde_json::to_vec(&first).map_or(1, |v| v.len().max(1));
                        let times = [2, 10, 100, 1000][rng.usize(..4)].min((1 << 20) / size);
                        a.extend(std::iter::repeat_n(first, times));
                    }
                }
            }
            6 => {
                let inner = node.take();
                *node = if rng.bool() {
                    Value::Array(vec![inner])
                } else {
                    let key = if keys.is_empty() { "a" } else { keys[rng.usize(..keys.len())] };
                    Value::Object(Map::from_iter([(key.to_string(), inner)]))
                };
            }
            7 => {
                *node = match node.take() {
                    Value::String(s) => s.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(s.len() as u64)),
                    Value::Number(n) => Value::String(n.to_string()),
                    Value::Bool(b) => Value::String(b.to_string()),
                    other => Value::String(other.to_string()),
                }
            }
            _ => {
                if let Value::String(s) = node {
                    // Stretch or cut a string: ids of the wrong length, huge names.
                    if rng.bool() {
                        s.truncate(s.char_indices().nth(rng.usize(..=s.chars().count())).map_or(s.len(), |(i, _)| i));
                    } else {
                        let tail = s.clone();
                        s.push_str(&tail.repeat(rng.usize(1..64)));
                    }
                }
            }
        }
    }
}

/// Every object key in `values`, for inserting known keys where they do not belong.
pub fn keys_of(values: &[Value]) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, child) in o {
                    if !out.contains(k) {
                        out.push(k.clone());
                    }
                    walk(child, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    values.iter().for_each(|v| walk(v, &mut out));
    out
}
