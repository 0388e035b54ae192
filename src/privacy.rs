//! Masking of personal data before anything a customer typed is stored
//! (the query log, the review queue, feedback comments): e-mail addresses,
//! phone numbers, and order, tracking, card or ID numbers become `[EMAIL]`,
//! `[PHONE]` and `[NUMBER]`. Masking runs on the text as received; the
//! embedding of a question is computed before masking and never stored as
//! text.
//!
//! Rules (in this order, so an e-mail's digits are not counted twice):
//! - e-mail: `local@domain.tld`;
//! - phone: a Chinese mobile number (`1[3-9]` + 9 digits, optionally `+86`
//!   and separators), a Chinese landline (`0` + area code + 7-8 digits with a
//!   dash or space), or an international number (`+` country code, then
//!   digits and separators, 8-15 digits in all);
//! - long number: any run of 7 or more digits (order, tracking, card, ID
//!   numbers), with the letters glued to it (`DD20241123001`, `SF1234567890`,
//!   an ID number ending in `X`), and digit groups joined by `-` or spaces
//!   that total 9 or more digits and are not a date (`6222 0210 0112 3456`,
//!   `2024-1123-0001`).
//!
//! Short numbers (prices, sizes, quantities, dates such as 2024-11-23, times)
//! are kept: they carry the meaning of the question and identify nobody.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::Regex;

const EMAIL: &str = "[EMAIL]";
const PHONE: &str = "[PHONE]";
const NUMBER: &str = "[NUMBER]";

struct Patterns {
    email: Regex,
    phone: Regex,
    number: Regex,
    date: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        email: Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
            .expect("e-mail pattern"),
        phone: Regex::new(concat!(
            // Chinese mobile, optionally with +86 / 0086 and separators: 138 1234 5678.
            r"(?:(?:\+|00)86[\s\-]?)?1[3-9]\d[\s\-]?\d{4}[\s\-]?\d{4}",
            // Chinese landline with an area code: 010-12345678, 0755 1234567.
            r"|0\d{2,3}[\s\-]\d{7,8}",
            // International: +44 20 7946 0958, +1 (415) 555-0100.
            r"|\+\d{1,3}(?:[\s\-]?\(?\d{1,4}\)?){2,5}",
        ))
        .expect("phone pattern"),
        number: Regex::new(concat!(
            // Letters glued to a run of 7+ digits (and letters after it).
            r"[A-Za-z]*\d{7,}[A-Za-z0-9]*",
            // Digit groups joined by single separators
            // (checked after matching: 9+ digits in all and not a date).
            r"|\d{2,}(?:[\s\-]\d{2,}){1,5}",
        ))
        .expect("number pattern"),
        date: Regex::new(r"^\d{4}[\s\-]\d{1,2}[\s\-]\d{1,2}$").expect("date pattern"),
    })
}

fn digits(s: &str) -> usize {
    s.bytes().filter(u8::is_ascii_digit).count()
}

/// The text with e-mail addresses, phone numbers and long numbers masked.
/// Borrows when nothing needed masking.
pub fn mask(text: &str) -> Cow<'_, str> {
    let p = patterns();
    let mut out = Cow::Borrowed(text);
    if p.email.is_match(&out) {
        out = Cow::Owned(p.email.replace_all(&out, EMAIL).into_owned());
    }
    let hay = out.clone();
    let phones = p.phone.replace_all(&hay, |c: &regex::Captures<'_>| {
        let whole = c.get(0).expect("group 0 always matches");
        let m = whole.as_str();
        // Part of a longer digit run (an ID or card number) is not a phone:
        // the number rule masks the whole run.
        let glued = hay[..whole.start()]
            .chars()
            .next_back()
            .is_some_and(|ch| ch.is_ascii_digit())
            || hay[whole.end()..]
                .chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_alphanumeric());
        // An international number needs 8-15 digits; a mobile or landline
        // pattern has enough by construction.
        if glued || (m.starts_with('+') && !m.starts_with("+86") && !(8..=15).contains(&digits(m)))
        {
            m.to_string()
        } else {
            PHONE.to_string()
        }
    });
    if let Cow::Owned(s) = phones {
        out = Cow::Owned(s);
    }
    let numbers = p.number.replace_all(&out, |c: &regex::Captures<'_>| {
        let m = &c[0];
        let grouped = m.contains([' ', '-']);
        let long = if grouped {
            digits(m) >= 9 && !p.date.is_match(m)
        } else {
            digits(m) >= 7
        };
        if long {
            NUMBER.to_string()
        } else {
            m.to_string()
        }
    });
    if let Cow::Owned(s) = numbers {
        out = Cow::Owned(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn emails_phones_and_order_numbers_are_masked() {
        let cases = [
            (
                "我的邮箱是 zhang.san+shop@example.com.cn 请回复",
                "我的邮箱是 [EMAIL] 请回复",
            ),
            ("手机13812345678收不到验证码", "手机[PHONE]收不到验证码"),
            (
                "call me at +86 138 1234 5678 please",
                "call me at [PHONE] please",
            ),
            ("座机 010-87654321", "座机 [PHONE]"),
            ("my number is +44 20 7946 0958", "my number is [PHONE]"),
            ("订单号DD20241123001一直没发货", "订单号[NUMBER]一直没发货"),
            (
                "order #123456789 never arrived",
                "order #[NUMBER] never arrived",
            ),
            ("顺丰单号SF1234567890查不到", "顺丰单号[NUMBER]查不到"),
            (
                "卡号 6222 0210 0112 3456 被扣了两次",
                "卡号 [NUMBER] 被扣了两次",
            ),
            ("身份证11010519491231002X", "身份证[NUMBER]"),
            ("order 2024-1123-0001 status", "order [NUMBER] status"),
        ];
        for (input, want) in cases {
            assert_eq!(mask(input), want, "input: {input}");
        }
    }

    #[test]
    fn ordinary_numbers_and_text_are_kept() {
        for text in [
            "满299减50的券怎么用",
            "我165cm 50公斤穿S还是M",
            "2024-11-23 下单的什么时候到",
            "退款3-5个工作日到账吗",
            "is the 15% off coupon valid until 11.30?",
            "iPhone 15 Pro 256GB有货吗",
            "我买了2件，总共198元",
            "营业时间 9:00-21:00",
        ] {
            assert_eq!(mask(text), text, "must be kept: {text}");
        }
        assert!(matches!(mask("没有数字"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn masking_is_idempotent() {
        let once = mask("订单DD20241123001 手机13812345678 a@b.co").into_owned();
        assert_eq!(mask(&once), once);
    }
}
