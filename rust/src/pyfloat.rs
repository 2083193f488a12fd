//! Python's text form of a float, which both the chat renderer (jinja2 prints `repr`)
//! and the NF4 quant_state (`json.dumps` writes `repr`) must reproduce byte for byte.
//!
//! Rust's `{:e}` already gives the shortest digits that round-trip, as Python's `repr`
//! does; only the layout differs: Python writes plain decimals for exponents -4..15 and
//! `1e-05` / `1e+16` (sign, at least two exponent digits) outside that range.

/// `repr(x)`: `nan`, `inf`, `-0.0`, `0.1`, `1e+16`.
pub fn repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    finite_repr(x)
}

/// `json.dumps(x)`: like `repr`, but `NaN`, `Infinity` and `-Infinity`.
pub fn json(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    finite_repr(x)
}

fn finite_repr(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sign = if x < 0.0 { "-" } else { "" };
    let e_form = format!("{:e}", x.abs());
    // `LowerExp` of a finite float is always `<digits>e<int>`.
    let (mant, exp) = e_form.split_once('e').unwrap_or((&e_form, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (a, b) = digits.split_at(point as usize);
            format!("{a}.{b}")
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (100.0, "100.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e-5, "1.5e-05"),
            (0.00001, "1e-05"),
            (-1.5e-7, "-1.5e-07"),
            (123456.789, "123456.789"),
            (123456789012345.6, "123456789012345.6"),
            (0.052454300224781036, "0.052454300224781036"),
            (-2.5, "-2.5"),
            (0.0001, "0.0001"),
            (-0.0, "-0.0"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ];
        for (x, want) in cases {
            assert_eq!(repr(x), want, "{x:e}");
            assert_eq!(json(x), want, "{x:e}");
        }
    }

    #[test]
    fn non_finite() {
        assert_eq!(repr(f64::NAN), "nan");
        assert_eq!(repr(f64::NEG_INFINITY), "-inf");
        assert_eq!(json(f64::NAN), "NaN");
        assert_eq!(json(f64::INFINITY), "Infinity");
    }
}
