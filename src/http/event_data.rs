//! An event's `data` as a request gives it: any JSON value, held as the text the log stores
//! (compact, each object's keys sorted: what serde_json writes for a [`Value`]).
//!
//! Why not a `Value`: building its tree (a map node and a string per key) and writing it out
//! again was ~4 % of an insert's instructions. Most bodies already carry that very text —
//! `JSON.stringify` of a number, a string or an object whose keys are in order — so one scan
//! that says so ([`is_canonical`]) lets it be taken as it came. Anything else (whitespace,
//! escapes, fractions and exponents, long integers, keys out of order or repeated, deep
//! nesting) goes through a `Value` as before: the stored text is the same either way, and so
//! are the errors.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseFromJSON, ParseResult, ToJSON, Type};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// Any JSON value, as its canonical text (see the module comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData(String);

impl EventData {
    /// `value`'s canonical text.
    pub fn of(value: &Value) -> Self {
        // Writing a Value cannot fail: its keys are strings and its numbers finite.
        EventData(serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned()))
    }

    /// The canonical text of `text`, one JSON value; an error if serde_json refuses it as a
    /// `Value` (too deep, a number out of range, a lone surrogate, …).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        Self::from_raw(serde_json::from_str(text)?)
    }

    /// [`EventData::parse`] of a value serde_json already delimited, reusing its text.
    fn from_raw(raw: Box<RawValue>) -> Result<Self, serde_json::Error> {
        if is_canonical(raw.get().as_bytes()) {
            return Ok(EventData(String::from(Box::<str>::from(raw))));
        }
        Self::through_value(raw.get())
    }

    fn through_value(text: &str) -> Result<Self, serde_json::Error> {
        let value: Value = serde_json::from_str(text)?;
        serde_json::to_string(&value).map(EventData)
    }

    /// The canonical text.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for EventData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        EventData::from_raw(raw).map_err(|e| {
            // The position serde_json gives is within the data; the body's deserializer
            // adds the position within the body, which is the one a client can use.
            let text = e.to_string();
            let within = format!(" at line {} column {}", e.line(), e.column());
            serde::de::Error::custom(text.strip_suffix(&within).unwrap_or(&text))
        })
    }
}

/// Deepest nesting [`is_canonical`] follows; deeper values take the `Value` path, which
/// enforces serde_json's own limit (128) with its error.
const MAX_DEPTH: usize = 32;

/// Whether `text` — one JSON value that serde_json accepted as a [`RawValue`] — is exactly
/// what serde_json writes for it as a [`Value`]. False whenever unsure: no whitespace outside
/// strings, no escape in a string (serde_json rewrites some, and refuses lone surrogates), only
/// integers of at most 18 digits and not `-0` (others become floats, written in their own
/// form, or are out of range), and each object's keys strictly ascending (a `Value` sorts
/// them and keeps the last of repeated ones).
pub fn is_canonical(text: &[u8]) -> bool {
    // For each open container: whether it is an object, and its last key so far.
    let mut objects = [false; MAX_DEPTH];
    let mut last_keys: [Option<&[u8]>; MAX_DEPTH] = [None; MAX_DEPTH];
    let mut depth = 0;
    // Whether the next string is an object's key.
    let mut at_key = false;
    let mut i = 0;
    while let Some(&byte) = text.get(i) {
        match byte {
            b'{' | b'[' => {
                if depth == MAX_DEPTH {
                    return false;
                }
                objects[depth] = byte == b'{';
                last_keys[depth] = None;
                depth += 1;
                at_key = byte == b'{';
                i += 1;
            }
            b'}' | b']' => {
                let Some(outer) = depth.checked_sub(1) else {
                    return false;
                };
                depth = outer;
                at_key = false;
                i += 1;
            }
            b',' => {
                at_key = depth > 0 && objects[depth - 1];
                i += 1;
            }
            b':' => i += 1,
            b'"' => {
                let start = i + 1;
                let Some(len) = text
                    .get(start..)
                    .and_then(|rest| rest.iter().position(|&c| c == b'"' || c == b'\\'))
                else {
                    return false;
                };
                if text[start + len] == b'\\' {
                    return false;
                }
                if at_key {
                    let key = &text[start..start + len];
                    let Some(last) = depth.checked_sub(1).map(|d| &mut last_keys[d]) else {
                        return false;
                    };
                    if last.is_some_and(|previous| previous >= key) {
                        return false;
                    }
                    *last = Some(key);
                    at_key = false;
                }
                i = start + len + 1;
            }
            b'-' | b'0'..=b'9' => {
                let first = i + usize::from(byte == b'-');
                let digits = text.get(first..).map_or(0, |rest| {
                    rest.iter().take_while(|c| c.is_ascii_digit()).count()
                });
                let end = first + digits;
                if digits == 0 || digits > 18 || (byte == b'-' && text[first] == b'0') {
                    return false;
                }
                if matches!(text.get(end), Some(b'.' | b'e' | b'E')) {
                    return false;
                }
                i = end;
            }
            b't' if text[i..].starts_with(b"true") => i += 4,
            b'n' if text[i..].starts_with(b"null") => i += 4,
            b'f' if text[i..].starts_with(b"false") => i += 5,
            _ => return false,
        }
    }
    depth == 0
}

/// The schema of any JSON value, as poem-openapi gives a [`Value`].
impl Type for EventData {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        <Value as Type>::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::ANY))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromJSON for EventData {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Ok(EventData::of(&value.unwrap_or_default()))
    }
}

impl ToJSON for EventData {
    fn to_json(&self) -> Option<Value> {
        serde_json::from_str(&self.0).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_text_is_taken_and_the_rest_goes_through_a_value() {
        let taken = [
            r#"{"n":1}"#,
            r#"{"a":[1,-2,true,false,null,"x"],"b":{"c":{}},"é":"ü"}"#,
            "123456789012345678",
            "-123456789012345678",
            "0",
            r#""plain""#,
            "[]",
            r#"[{"b":1,"c":2},{"a":1}]"#,
        ];
        for text in taken {
            assert!(is_canonical(text.as_bytes()), "{text}");
            crate::fuzzing::event_data_as_value(text);
        }
        let rewritten = [
            (r#"{"b":1,"a":2}"#, r#"{"a":2,"b":1}"#),
            (r#"{"a":1,"a":2}"#, r#"{"a":2}"#),
            (r#"{ "a" : 1 }"#, r#"{"a":1}"#),
            (r#""\u0041\/""#, r#""A/""#),
            ("1.0", "1.0"),
            ("1e2", "100.0"),
            ("-0", "-0.0"),
            ("1234567890123456789", "1234567890123456789"),
            ("12345678901234567890123", "1.2345678901234568e+22"),
            (r#"{"z":{"b":1,"a":1}}"#, r#"{"z":{"a":1,"b":1}}"#),
            // serde_json's float parsing lands on a neighbour: what a Value says is stored.
            ("-7.329022971966526e+287", "-7.329022971966527e+287"),
        ];
        for (text, canonical) in rewritten {
            assert!(!is_canonical(text.as_bytes()), "{text}");
            assert_eq!(EventData::parse(text).unwrap().into_string(), canonical);
            crate::fuzzing::event_data_as_value(text);
        }
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert!(!is_canonical(deep.as_bytes()));
        assert_eq!(EventData::parse(&deep).unwrap().into_string(), deep);
        let too_deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(EventData::parse(&too_deep).is_err(), "serde_json's limit");
        for refused in ["1e400", r#""\ud800""#] {
            assert!(EventData::parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_body_parses_the_same_either_way() {
        #[derive(Deserialize)]
        struct Body {
            data: EventData,
        }
        let body: Body = serde_json::from_slice(br#"{"data": {"b":[1, 2],"a":null} }"#).unwrap();
        assert_eq!(body.data.into_string(), r#"{"a":null,"b":[1,2]}"#);
        let body: Body = serde_json::from_slice(br#"{"data":{"a":1}}"#).unwrap();
        assert_eq!(body.data.into_string(), r#"{"a":1}"#);
        let missing = serde_json::from_slice::<Body>(b"{}").err().unwrap();
        assert!(
            missing.to_string().contains("missing field `data`"),
            "{missing}"
        );
        // A refusal on the Value path names the field and a position in the body (the data's
        // end), not one within the data.
        let refused = crate::http::body::parse_json::<Body>(br#"{"data": [1, 1e999]}"#)
            .err()
            .unwrap();
        assert_eq!(
            refused.message,
            "invalid request body: data: number out of range at line 1 column 20"
        );
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-c\"\\\\/\u{1}é ]{0,4}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec(("[a-c\"é]{0,3}", inner), 0..4)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any value, written canonically, pretty-printed, or with one object's keys
        /// reversed: the stored text is serde_json's.
        #[test]
        fn every_spelling_gives_serde_jsons_text(value in json()) {
            let canonical = serde_json::to_string(&value).unwrap();
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            // Read back, a float may land on a neighbour (serde_json's fast float parsing):
            // what is stored is what a Value of the text says, for every spelling alike.
            let stored = EventData::of(&serde_json::from_str::<Value>(&canonical).unwrap());
            for text in [&canonical, &pretty, &reversed(&value)] {
                crate::fuzzing::event_data_as_value(text);
                prop_assert_eq!(&EventData::parse(text).unwrap(), &stored);
            }
        }
    }

    /// `value` written with every object's keys in descending order.
    fn reversed(value: &Value) -> String {
        match value {
            Value::Object(map) => {
                let members: Vec<String> = map
                    .iter()
                    .rev()
                    .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), reversed(v)))
                    .collect();
                format!("{{{}}}", members.join(","))
            }
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(reversed).collect();
                format!("[{}]", items.join(","))
            }
            other => other.to_string(),
        }
    }
}
