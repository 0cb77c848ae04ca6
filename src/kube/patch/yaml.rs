//! YAML bodies of server-side apply, read into a `serde_json::Value` within
//! bounds.
//!
//! serde_yaml limits nesting (128) and counts alias jumps, but a jump may
//! repeat a large anchored node, so a 1 MiB body of aliases can still
//! expand to gigabytes. This reader charges every node
//! ([`NODE_COST`]) and every string's and key's bytes against [`BUDGET`]
//! and fails once it is spent. A document without aliases costs at most
//! about five times its size (a node takes at least two bytes, `1,`), so
//! every body within `MAX_PATCH_BYTES` fits, and an expanding one holds at
//! most about as many nodes as the densest JSON body of that size.
//!
//! Before that, the body's size times its count of `[` and `{` must stay
//! within [`MAX_FLOW_COST`]: libyaml rescans its stack of flow levels at
//! every token, so its time grows with size times flow depth (a 500 KB
//! body of `{"a":` took over a minute to refuse, unoptimized), and the count of
//! openers bounds the depth without having to parse. A lease in YAML has a
//! handful; a body that needs more is welcome as JSON, which is read
//! without this bound.
//!
//! What it reads as JSON would (`sigs.k8s.io/yaml` turns YAML into JSON
//! too): scalar map keys become strings (`1: a` is `{"1": "a"}`); a float
//! that JSON cannot hold (`.inf`, `.nan`) and a tagged value (`!foo x`) are
//! errors. serde_yaml reads YAML 1.2, so `yes` is a string where
//! upstream's YAML 1.1 reader makes it a boolean; validation decides what
//! that means for a field.

use super::{MAX_DEPTH, MAX_PATCH_BYTES};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::Cell;
use std::fmt;

/// What one node (scalar, list, map or key) costs, in budget units; strings
/// and keys cost their bytes on top.
pub const NODE_COST: usize = 8;

/// The budget of one document, in units of [`NODE_COST`] and bytes.
pub const BUDGET: usize = 6 * MAX_PATCH_BYTES;

/// Most a YAML body's length times its count of flow collection openers
/// (`[`, `{`) may be: 256 in a 512 KiB body (a second or so of libyaml,
/// unoptimized; a tenth of that optimized).
pub const MAX_FLOW_COST: usize = 1 << 27;

/// The document in `body`, as JSON.
pub fn from_slice(body: &[u8]) -> Result<Value, serde_yaml::Error> {
    let openers = body.iter().filter(|&&b| b == b'[' || b == b'{').count();
    if openers.saturating_mul(body.len()) > MAX_FLOW_COST {
        return Err(de::Error::custom(format!(
            "a YAML body of {} bytes may open at most {} flow collections ([ or {{), this one \
             opens {openers}; send it as JSON",
            body.len(),
            MAX_FLOW_COST / body.len().max(1)
        )));
    }
    from_slice_within(body, BUDGET)
}

/// [`from_slice`] with another budget (for tests).
pub fn from_slice_within(body: &[u8], budget: usize) -> Result<Value, serde_yaml::Error> {
    let left = Cell::new(budget);
    let seed = Bounded {
        left: &left,
        depth: 0,
    };
    seed.deserialize(serde_yaml::Deserializer::from_slice(body))
}

/// A value at `depth`, paid from `left`.
#[derive(Clone, Copy)]
struct Bounded<'a> {
    left: &'a Cell<usize>,
    depth: usize,
}

impl Bounded<'_> {
    fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let cost = NODE_COST.saturating_add(bytes);
        match self.left.get().checked_sub(cost) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(E::custom(
                "the document expands beyond what a patch may hold (too many aliases?)",
            )),
        }
    }

    fn nested<E: de::Error>(&self) -> Result<Bounded<'_>, E> {
        self.charge(0)?;
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format!(
                "the document nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Bounded {
            left: self.left,
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value JSON can hold")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.charge(0)?;
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("unsupported value: {v}")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut members = Map::new();
        while let Some(key) = map.next_key_seed(Key(inner))? {
            let value = map.next_value_seed(inner)?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

/// A map key: a scalar, as a string.
struct Key<'a>(Bounded<'a>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar map key")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        self.visit_string(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        self.visit_string(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        self.visit_string(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        self.visit_string(v.to_string())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.0.charge(v.len())?;
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        self.0.charge(v.len())?;
        Ok(v)
    }
}
