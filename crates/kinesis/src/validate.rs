//! Schema checks worded as AWS words them.
//!
//! AWS checks every member against the service model's constraints before the operation
//! runs and reports every violation at once, as a `ValidationException` whose message is
//! "N validation error(s) detected: " followed by each violation, joined by "; ". Members
//! are named by their camelCase path (`partitionKey`, `records.3.member.data`, with
//! 1-based list positions). Strings are quoted in the message; blobs and lists are not
//! shown, and a missing required member is "Value null".

use crate::ApiError;

/// Violations found so far in one request.
#[derive(Debug, Default)]
pub(crate) struct Violations(Vec<String>);

impl Violations {
    fn push(&mut self, value: Option<&str>, path: &str, constraint: &str) {
        let value = match value {
            Some(text) => format!("Value '{text}' at"),
            None => "Value at".to_owned(),
        };
        self.0.push(format!(
            "{value} '{path}' failed to satisfy constraint: {constraint}"
        ));
    }

    /// A required member is missing.
    pub(crate) fn null(&mut self, path: &str) {
        self.0.push(format!(
            "Value null at '{path}' failed to satisfy constraint: Member must not be null"
        ));
    }

    /// A string member is shorter than `min` or longer than `max`, counted in UTF-16 code
    /// units as the Java service counts (a character outside the BMP counts twice).
    pub(crate) fn string_length(&mut self, text: &str, path: &str, min: usize, max: usize) {
        let units = text.encode_utf16().count();
        if units < min {
            self.push(
                Some(text),
                path,
                &format!("Member must have length greater than or equal to {min}"),
            );
        } else if units > max {
            self.push(
                Some(text),
                path,
                &format!("Member must have length less than or equal to {max}"),
            );
        }
    }

    /// A blob or list member is longer than `max` (bytes or entries); its value is not shown.
    pub(crate) fn too_long(&mut self, path: &str, max: usize) {
        self.push(
            None,
            path,
            &format!("Member must have length less than or equal to {max}"),
        );
    }

    /// A blob or list member is shorter than `min`; its value is not shown.
    pub(crate) fn too_short(&mut self, path: &str, min: usize) {
        self.push(
            None,
            path,
            &format!("Member must have length greater than or equal to {min}"),
        );
    }

    /// A string member does not match the model's pattern.
    pub(crate) fn pattern(&mut self, text: &str, path: &str, pattern: &str) {
        self.push(
            Some(text),
            path,
            &format!("Member must satisfy regular expression pattern: {pattern}"),
        );
    }

    /// `Ok` when nothing was found, else the `ValidationException` listing every violation.
    pub(crate) fn finish(self) -> Result<(), ApiError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(ApiError::validation(format!(
                "1 validation error detected: {}",
                self.0[0]
            ))),
            count => Err(ApiError::validation(format!(
                "{count} validation errors detected: {}",
                self.0.join("; ")
            ))),
        }
    }
}

/// The model's pattern for hash keys.
pub(crate) const HASH_KEY_PATTERN: &str = "0|([1-9]\\d{0,38})";
/// The model's pattern for sequence numbers.
pub(crate) const SEQUENCE_NUMBER_PATTERN: &str = "0|([1-9]\\d{0,128})";

/// Whether `text` matches `0|([1-9]\d{0,digits_max - 1})`: a decimal of at most
/// `digits_max` digits without leading zeros (the shape of hash keys and sequence numbers).
pub(crate) fn is_decimal(text: &str, digits_max: usize) -> bool {
    text == "0"
        || (!text.starts_with('0')
            && (1..=digits_max).contains(&text.len())
            && text.bytes().all(|byte| byte.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_violation_reads_as_aws_writes_it() {
        let mut violations = Violations::default();
        violations.string_length(&"k".repeat(257), "partitionKey", 1, 256);
        let error = violations.finish().unwrap_err();
        assert_eq!(error.kind, "ValidationException");
        assert_eq!(
            error.message,
            format!(
                "1 validation error detected: Value '{}' at 'partitionKey' failed to satisfy constraint: Member must have length less than or equal to 256",
                "k".repeat(257)
            )
        );
    }

    #[test]
    fn several_violations_are_counted_and_joined() {
        let mut violations = Violations::default();
        violations.null("data");
        violations.string_length("", "partitionKey", 1, 256);
        violations.pattern("x1", "explicitHashKey", HASH_KEY_PATTERN);
        assert_eq!(
            violations.finish().unwrap_err().message,
            "3 validation errors detected: Value null at 'data' failed to satisfy constraint: Member must not be null; \
             Value '' at 'partitionKey' failed to satisfy constraint: Member must have length greater than or equal to 1; \
             Value 'x1' at 'explicitHashKey' failed to satisfy constraint: Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})"
        );
        assert!(Violations::default().finish().is_ok());
    }

    #[test]
    fn lengths_count_utf16_units() {
        let mut violations = Violations::default();
        // 128 characters outside the BMP are 256 UTF-16 units: allowed; 129 are not.
        violations.string_length(&"😀".repeat(128), "partitionKey", 1, 256);
        assert!(violations.finish().is_ok());
        let mut violations = Violations::default();
        violations.string_length(&"😀".repeat(129), "partitionKey", 1, 256);
        assert!(violations.finish().is_err());
    }

    #[test]
    fn decimals_follow_the_model_patterns() {
        for good in ["0", "1", "340282366920938463463374607431768211456", "9"] {
            assert!(is_decimal(good, 39), "{good}");
        }
        for bad in ["", "01", "-1", "1.5", "abc", " 1", &"1".repeat(40)] {
            assert!(!is_decimal(bad, 39), "{bad}");
        }
    }
}
