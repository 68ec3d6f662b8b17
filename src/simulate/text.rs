//! Text that real Info Marts hold and naive exporters break on: commas, quotes, newlines, non-ASCII,
//! empty strings next to NULLs, leading and trailing blanks.

use super::rng::Rng;
use super::Val;

pub const FIRST_NAMES: &[&str] = &[
    "Anna", "José", "Zoë", "Liam", "Søren", "Ngozi", "Mei", "Olivia", "Łukasz", "Ahmed", "Chloé",
    "Raj",
];
pub const LAST_NAMES: &[&str] = &[
    "Smith",
    "O'Brien",
    "Müller",
    "García",
    "Nakamura",
    "Smith, Jr.",
    "Dubois",
    "Kowalski",
    "Ivanova",
    "Hernández",
    "Ng",
    "\"The Rock\" Johnson",
];
const SUBJECTS: &[&str] = &[
    "Billing question",
    "Réclamation, facture n°4711",
    "Call about \"VIP\" status",
    "Line one\nline two",
    "Windows line\r\nbreak",
    "Kündigung zum 31.12.",
    "注文の確認",
    "  padded subject  ",
    "Emoji 😀 support",
    "a,b,c",
    "\"quoted\"",
    "Password reset",
];
const SEGMENTS: &[&str] = &["Gold", "Silver", "Bronze", "Platinum, VIP", "Ünïcödé"];
const DISPOSITIONS: &[&str] = &[
    "Resolved",
    "Escalated",
    "Callback, next week",
    "Sale \"closed\"",
    "Nota: cliente molto soddisfatto\n(seguire)",
];

/// A subject: usually text, sometimes empty, sometimes NULL.
pub fn subject(rng: &mut Rng) -> Val {
    match rng.below(20) {
        0 => Val::Null,
        1 => Val::text(""),
        _ => Val::text(*rng.pick(SUBJECTS)),
    }
}

pub fn segment(rng: &mut Rng) -> Val {
    Val::text(*rng.pick(SEGMENTS))
}

/// One user-data value (CUSTOM_DATA_n): mostly short codes, some hostile text, some empty or NULL.
pub fn custom_data(rng: &mut Rng, n: usize, id: i64) -> Val {
    match rng.below(12) {
        0 => Val::Null,
        1 => Val::text(""),
        2 => Val::text(*rng.pick(DISPOSITIONS)),
        3 => Val::text(format!("acct-{id:08}")),
        _ => Val::text(format!("KV{n}_{}", rng.below(1000))),
    }
}

pub fn address(rng: &mut Rng) -> Val {
    match rng.below(10) {
        0 => Val::Null,
        1 => Val::text(format!("client{}@example.com", rng.below(100_000))),
        _ => Val::text(format!("+1555{:07}", rng.below(10_000_000))),
    }
}
