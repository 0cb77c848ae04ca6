//! Strategic merge patch, for the one schema served: a Lease.
//!
//! Apimachinery's `strategicpatch` (v0.32.4 `pkg/util/strategicpatch/
//! patch.go`, `mergeMap` and what it calls, with `MergeParallelList` and
//! `IgnoreUnmatchedNulls` on, as `StrategicMergeMapPatch` runs it) merges
//! like RFC 7386 except where the Go types' `patchStrategy` tags say
//! otherwise. In a Lease (ObjectMeta and LeaseSpec) only two lists have
//! one:
//! - `metadata.finalizers`: `merge`, a list of strings merged as a set
//!   (union, live order kept, new items after);
//! - `metadata.ownerReferences`: `merge` with merge key `uid`: items with
//!   the same `uid` are merged as maps, others appended.
//!
//! Every other list (`metadata.managedFields`) is replaced whole, and every
//! map (`metadata`, `labels`, `annotations`, `spec`) is merged key by key.
//! `null` deletes a key; a `null` inside a value that is new is dropped.
//!
//! Directives, honoured and stripped:
//! - `$patch: replace` in a map: the map becomes the patch's (less the
//!   directive); `$patch: delete`: the map becomes `{}` (or is not added);
//!   any other value is an error (upstream: `unknown patch type`, also for
//!   `merge`, which only lists would take and they refuse it).
//! - In a merged list of maps, an item `{"uid": …, "$patch": "delete"}`
//!   removes the live items with that `uid`; `{"$patch": "replace"}` makes
//!   the list the patch's other items; `merge` is refused.
//! - `$retainKeys: [..]`: the live map keeps only these keys; a patch key
//!   outside the list is an error.
//! - `$deleteFromPrimitiveList/<list>: [..]`: removes these values from a
//!   list of scalars.
//! - `$setElementOrder/<list>: [..]`: the order of the merged list: items
//!   named there in that order, interleaved with live-only items at their
//!   live positions. It orders; it adds and removes nothing.
//!
//! Keys that merely start with `$` are ordinary fields, as upstream: the
//! caller's strict field validation refuses them.
//!
//! Upstream processes a patch map's keys in Go's random map order; here
//! `$retainKeys` and `$setElementOrder/…` come first (as upstream), then
//! the other keys, then the `$deleteFromPrimitiveList/…` lists. Scalars are
//! compared as JSON values (so `1` and `1.0` differ, as Go's int64 and
//! float64 do).

use super::{bad_request, rejected};
use crate::kube::status::KubeError;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

// mergepatch/errors.go:28-30.
const ERR_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const ERR_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const ERR_SET_ORDER: &str = "invalid patch format of setElementOrder list";

type Obj = Map<String, Value>;

/// Applies `patch` to `live`, a Lease as JSON.
pub fn merge(live: Obj, patch: Obj) -> Result<Obj, KubeError> {
    merge_map(live, patch, Node::Root)
}

/// Where a map sits in a Lease, which decides its lists' strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Root,
    Metadata,
    Other,
}

/// How a list merges (the Go field's `patchStrategy`, `patchMergeKey`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// No strategy: the patch's list replaces the live one.
    Replace,
    /// `merge`, with this merge key (`""` for a list of scalars).
    Merge(&'static str),
}

impl Strategy {
    fn merge_key(self) -> &'static str {
        match self {
            Strategy::Replace => "",
            Strategy::Merge(key) => key,
        }
    }
}

impl Node {
    fn child(self, key: &str) -> Node {
        match (self, key) {
            (Node::Root, "metadata") => Node::Metadata,
            _ => Node::Other,
        }
    }

    fn list(self, key: &str) -> Strategy {
        match (self, key) {
            (Node::Metadata, "finalizers") => Strategy::Merge(""),
            (Node::Metadata, "ownerReferences") => Strategy::Merge("uid"),
            _ => Strategy::Replace,
        }
    }
}

/// `mergeMap`.
fn merge_map(mut live: Obj, mut patch: Obj, node: Node) -> Result<Obj, KubeError> {
    if let Some(directive) = patch.get(PATCH) {
        return match directive.as_str() {
            Some("replace") => {
                patch.remove(PATCH);
                Ok(patch)
            }
            Some("delete") => Ok(Obj::new()),
            _ => Err(bad_patch_type(directive, &patch)),
        };
    }
    retain_keys(&mut live, &mut patch)?;
    set_element_order(&mut live, &mut patch, node)?;
    let (deletions, rest): (Vec<_>, Vec<_>) = patch
        .into_iter()
        .partition(|(k, _)| k.starts_with(DELETE_FROM_PRIMITIVE_LIST));
    for (key, value) in rest {
        merge_entry(&mut live, key, value, node, false)?;
    }
    for (key, value) in deletions {
        let list = extract_key(&key, DELETE_FROM_PRIMITIVE_LIST, ERR_PRIMITIVE_LIST)?;
        merge_entry(&mut live, list, value, node, true)?;
    }
    Ok(live)
}

/// One key of `mergeMap`'s loop. `delete_list`: the value is a
/// `$deleteFromPrimitiveList/<key>` list, which only acts on a live list.
fn merge_entry(
    live: &mut Obj,
    key: String,
    value: Value,
    node: Node,
    delete_list: bool,
) -> Result<(), KubeError> {
    if value.is_null() {
        live.remove(&key);
        return Ok(());
    }
    match (live.get_mut(&key), value) {
        (Some(Value::Object(l)), Value::Object(p)) => {
            let merged = merge_map(std::mem::take(l), p, node.child(&key))?;
            *l = merged;
        }
        (Some(Value::Array(l)), Value::Array(p)) => {
            let strategy = node.list(&key);
            if strategy != Strategy::Replace || delete_list {
                let merged = merge_list(std::mem::take(l), p, strategy, delete_list, &key)?;
                *l = merged;
            } else {
                *l = p;
            }
        }
        (_, _) if delete_list => {}
        (_, mut value) => {
            discard_nulls(&mut value);
            match remove_directives(value) {
                Some(value) => {
                    live.insert(key, value);
                }
                None => {
                    live.remove(&key);
                }
            }
        }
    }
    Ok(())
}

/// `v` as JSON for an error message, cut after [`BRIEF`] bytes (upstream
/// prints the whole value, which may be most of the body).
fn brief(v: &Value) -> String {
    let mut text = v.to_string();
    if text.len() > BRIEF {
        let mut end = BRIEF;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// Longest rendering of a value in an error message, bytes.
const BRIEF: usize = 256;

/// `unknown patch type: X in map: M` (`mergepatch.ErrBadPatchType`).
fn bad_patch_type(directive: &Value, map: &Obj) -> KubeError {
    let directive = match directive {
        Value::String(s) if s.len() <= BRIEF => s.clone(),
        other => brief(other),
    };
    bad_request(format!(
        "unknown patch type: {directive} in map: {}",
        brief(&Value::Object(map.clone()))
    ))
}

fn no_merge_key(item: &Value, merge_key: &str) -> KubeError {
    bad_request(format!(
        "map: {} does not contain declared merge key: {merge_key}",
        brief(item)
    ))
}

/// The list a `$prefix/<list>` key names (`extractKey`).
fn extract_key(key: &str, prefix: &str, error: &str) -> Result<String, KubeError> {
    match key.split_once('/') {
        Some((p, list)) if p == prefix => Ok(list.to_string()),
        _ => Err(bad_request(error)),
    }
}

/// `applyRetainKeysDirective`.
fn retain_keys(live: &mut Obj, patch: &mut Obj) -> Result<(), KubeError> {
    let Some(keys) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(keys) = keys else {
        return Err(bad_request(ERR_RETAIN_KEYS));
    };
    let keys: HashSet<&str> = keys.iter().filter_map(Value::as_str).collect();
    let outside = patch.iter().any(|(k, v)| {
        !v.is_null()
            && !k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            && !k.starts_with(SET_ELEMENT_ORDER)
            && !keys.contains(k.as_str())
    });
    if outside {
        return Err(bad_request(ERR_RETAIN_KEYS));
    }
    live.retain(|k, _| keys.contains(k.as_str()));
    Ok(())
}

/// `mergePatchIntoOriginal`: each `$setElementOrder/<list>` merges the
/// patch's `<list>` (if any) into the live one and orders the result.
fn set_element_order(live: &mut Obj, patch: &mut Obj, node: Node) -> Result<(), KubeError> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive in directives {
        let Some(Value::Array(order)) = patch.remove(&directive) else {
            return Err(bad_request(ERR_SET_ORDER));
        };
        let field = extract_key(&directive, SET_ELEMENT_ORDER, ERR_SET_ORDER)?;
        let live_list = match live.get(&field) {
            None => None,
            Some(Value::Array(l)) => Some(l.clone()),
            Some(_) => {
                return Err(bad_request(format!(
                    "{directive}: the live {field} is not a list"
                )))
            }
        };
        let patch_list = match patch.remove(&field) {
            None => None,
            Some(Value::Array(p)) => Some(p),
            Some(_) => {
                return Err(bad_request(format!("{directive}: {field} is not a list")));
            }
        };
        let strategy = node.list(&field);
        let merge_key = strategy.merge_key();
        validate_order(patch_list.as_deref().unwrap_or_default(), &order, merge_key)?;
        let merged = match (&live_list, patch_list) {
            (Some(l), None) => l.clone(),
            (None, Some(p)) => p.into_iter().filter_map(remove_directives).collect(),
            (Some(l), Some(p)) if strategy != Strategy::Replace => {
                merge_list(l.clone(), p, strategy, false, &field)?
            }
            (Some(_), Some(p)) => p,
            (None, None) => continue,
        };
        let (in_order, live_only) = partition(merged, &order, merge_key)?;
        let live_order = live_list.unwrap_or_default();
        let ordered = normalize_order(in_order, live_only, &order, &live_order, merge_key)?;
        live.insert(field, Value::Array(ordered));
    }
    Ok(())
}

/// `validatePatchWithSetOrderList`: the patch's items must appear in the
/// `$setElementOrder` list, in the same relative order.
fn validate_order(patch: &[Value], order: &[Value], merge_key: &str) -> Result<(), KubeError> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut items = Vec::with_capacity(patch.len());
    for item in patch {
        if merge_key.is_empty() {
            items.push(item);
            continue;
        }
        let Value::Object(m) = item else {
            return Err(bad_request(format!(
                "expected a map, but received {}",
                brief(item)
            )));
        };
        if m.get(PATCH).and_then(Value::as_str) != Some("delete") {
            items.push(item);
        }
    }
    let (mut p, mut o) = (0, 0);
    while p < items.len() && o < order.len() {
        if items[p].get(PATCH).is_some() {
            p += 1;
            continue;
        }
        if same_item(items[p], &order[o], merge_key)? {
            p += 1;
        }
        o += 1;
    }
    if p < items.len() {
        return Err(bad_request(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER} list:\n{}\n",
            brief(&Value::Array(patch.to_vec())),
            brief(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

/// `mergeKeyValueEqual`.
fn same_item(a: &Value, b: &Value, merge_key: &str) -> Result<bool, KubeError> {
    if merge_key.is_empty() {
        return Ok(a == b);
    }
    let key = |v: &Value| match v {
        Value::Object(m) => m
            .get(merge_key)
            .cloned()
            .ok_or_else(|| no_merge_key(v, merge_key)),
        other => Err(bad_request(format!(
            "expected a map, but received {}",
            brief(other)
        ))),
    };
    Ok(key(a)? == key(b)?)
}

/// The JSON kinds of list items, for `sliceElementType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

fn item_kind(v: &Value) -> ItemKind {
    match v {
        Value::Null => ItemKind::Null,
        Value::Bool(_) => ItemKind::Bool,
        Value::Number(_) => ItemKind::Number,
        Value::String(_) => ItemKind::String,
        Value::Array(_) => ItemKind::Array,
        Value::Object(_) => ItemKind::Object,
    }
}

/// `sliceElementType`: all items of both lists are of one kind, and not
/// lists (that is upstream's one 422 here).
fn element_kind(live: &[Value], patch: &[Value]) -> Result<ItemKind, KubeError> {
    let mut items = live.iter().chain(patch);
    let Some(first) = items.next() else {
        return Ok(ItemKind::Null);
    };
    let kind = item_kind(first);
    if kind == ItemKind::Array {
        return Err(rejected("lists of lists are not supported"));
    }
    if items.any(|v| item_kind(v) != kind) {
        return Err(bad_request(format!(
            "list element types are not identical: {} and {}",
            brief(&Value::Array(live.to_vec())),
            brief(&Value::Array(patch.to_vec()))
        )));
    }
    Ok(kind)
}

/// An item's identity in a list: itself as JSON for scalars, its merge
/// key's value as JSON for maps.
fn identity(item: &Value, merge_key: &str) -> Result<String, KubeError> {
    if merge_key.is_empty() {
        return Ok(item.to_string());
    }
    match item {
        Value::Object(m) => m
            .get(merge_key)
            .map(Value::to_string)
            .ok_or_else(|| no_merge_key(item, merge_key)),
        other => Err(bad_request(format!(
            "expected a map, but received {}",
            brief(other)
        ))),
    }
}

/// `mergeSlice`, for a list whose strategy is `merge` (or a
/// `$deleteFromPrimitiveList`).
fn merge_list(
    live: Vec<Value>,
    patch: Vec<Value>,
    strategy: Strategy,
    delete_list: bool,
    field: &str,
) -> Result<Vec<Value>, KubeError> {
    if live.is_empty() && patch.is_empty() {
        return Ok(live);
    }
    let merge_key = strategy.merge_key();
    let (live, patch, merged) = if element_kind(&live, &patch)? != ItemKind::Object {
        if delete_list {
            let gone: HashSet<String> = patch.iter().map(Value::to_string).collect();
            return Ok(live
                .into_iter()
                .filter(|v| !gone.contains(&v.to_string()))
                .collect());
        }
        let mut seen = HashSet::new();
        let merged = live
            .iter()
            .chain(&patch)
            .filter(|v| seen.insert(v.to_string()))
            .cloned()
            .collect();
        (live, patch, merged)
    } else {
        if merge_key.is_empty() {
            return Err(bad_request(format!(
                "cannot merge lists without merge key for {field}"
            )));
        }
        let (live, patch) = special_items(live, patch, merge_key)?;
        let merged = merge_items(live.clone(), &patch, merge_key)?;
        (live, patch, merged)
    };
    let (in_patch, live_only) = partition(merged, &patch, merge_key)?;
    normalize_order(in_patch, live_only, &patch, &live, merge_key)
}

/// `mergeSliceWithSpecialElements`: patch items carrying `$patch` delete
/// live items by merge key, or make the list the patch's; the other patch
/// items are returned.
fn special_items(
    live: Vec<Value>,
    patch: Vec<Value>,
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>), KubeError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut deleted = HashSet::new();
    let mut replace = false;
    for item in patch {
        let directive = match &item {
            Value::Object(map) => map.get(PATCH).map(|d| (d, map)),
            _ => None,
        };
        let Some((directive, map)) = directive else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                deleted.insert(identity(&item, merge_key)?);
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(bad_request(
                    "merging lists cannot yet be specified in the patch",
                ))
            }
            _ => return Err(bad_patch_type(directive, map)),
        }
    }
    if replace {
        return Ok((plain, Vec::new()));
    }
    let mut kept = Vec::with_capacity(live.len());
    for item in live {
        if !deleted.contains(&identity(&item, merge_key)?) {
            kept.push(item);
        }
    }
    Ok((kept, plain))
}

/// `mergeSliceWithoutSpecialElements`: each patch item merges into the
/// live item with its merge key, or is appended.
fn merge_items(
    mut live: Vec<Value>,
    patch: &[Value],
    merge_key: &str,
) -> Result<Vec<Value>, KubeError> {
    let mut at: HashMap<String, usize> = HashMap::new();
    for (i, item) in live.iter().enumerate() {
        at.entry(identity(item, merge_key)?).or_insert(i);
    }
    for item in patch {
        let id = identity(item, merge_key)?;
        match at.get(&id) {
            Some(&i) => {
                // identity() took both as maps.
                if let (Value::Object(l), Value::Object(p)) = (&mut live[i], item) {
                    let merged = merge_map(std::mem::take(l), p.clone(), Node::Other)?;
                    *l = merged;
                }
            }
            None => {
                at.insert(id, live.len());
                live.push(item.clone());
            }
        }
    }
    Ok(live)
}

/// `partition{Primitives,Maps}ByPresentInList`: the items of `merged` that
/// `by` names, and the others, each in `merged`'s order.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>), KubeError> {
    let named: HashSet<String> = if merge_key.is_empty() {
        by.iter().map(Value::to_string).collect()
    } else {
        // Upstream skips items of `by` without the key here.
        by.iter()
            .filter_map(|v| v.get(merge_key).map(Value::to_string))
            .collect()
    };
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    for item in merged {
        if named.contains(&identity(&item, merge_key)?) {
            inside.push(item);
        } else {
            outside.push(item);
        }
    }
    Ok((inside, outside))
}

/// `normalizeElementOrder`: `patch_items` sorted by `patch_order`,
/// `live_only` by `live_order`, then interleaved (`mergeSortedSlice`): a
/// live-only item goes before a patch item when both are live and it came
/// first there.
fn normalize_order(
    patch_items: Vec<Value>,
    live_only: Vec<Value>,
    patch_order: &[Value],
    live_order: &[Value],
    merge_key: &str,
) -> Result<Vec<Value>, KubeError> {
    let patch_items = sort_by_order(patch_items, patch_order, merge_key)?;
    let live_only = sort_by_order(live_only, live_order, merge_key)?;
    let live_at = positions(live_order, merge_key)?;
    let at = |item: &Value| -> Result<Option<usize>, KubeError> {
        Ok(live_at.get(&identity(item, merge_key)?).copied())
    };
    let mut out = Vec::with_capacity(patch_items.len() + live_only.len());
    let mut left = live_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!((at(l)?, at(r)?), (Some(li), Some(ri)) if li < ri),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    Ok(out)
}

/// Where each item first appears in `order`, by identity.
fn positions(order: &[Value], merge_key: &str) -> Result<HashMap<String, usize>, KubeError> {
    let mut at = HashMap::with_capacity(order.len());
    for (i, item) in order.iter().enumerate() {
        at.entry(identity(item, merge_key)?).or_insert(i);
    }
    Ok(at)
}

/// `normalizeSliceOrder`: a stable sort by position in `order` (items it
/// lacks last); maps carrying `$patch: delete` go to the end.
fn sort_by_order(
    items: Vec<Value>,
    order: &[Value],
    merge_key: &str,
) -> Result<Vec<Value>, KubeError> {
    let at = positions(order, merge_key)?;
    let mut keyed = Vec::with_capacity(items.len());
    let mut deletions = Vec::new();
    for item in items {
        if !merge_key.is_empty() && item.get(PATCH).and_then(Value::as_str) == Some("delete") {
            deletions.push(item);
            continue;
        }
        let position = at
            .get(&identity(&item, merge_key)?)
            .copied()
            .unwrap_or(usize::MAX);
        keyed.push((position, item));
    }
    keyed.sort_by_key(|(position, _)| *position);
    Ok(keyed
        .into_iter()
        .map(|(_, item)| item)
        .chain(deletions)
        .collect())
}

/// `removeDirectives`: a map carrying `$patch` is dropped (None), and so
/// inside maps and lists.
fn remove_directives(value: Value) -> Option<Value> {
    match value {
        Value::Object(m) => {
            if m.contains_key(PATCH) {
                return None;
            }
            Some(Value::Object(
                m.into_iter()
                    .filter_map(|(k, v)| remove_directives(v).map(|v| (k, v)))
                    .collect(),
            ))
        }
        Value::Array(a) => Some(Value::Array(
            a.into_iter().filter_map(remove_directives).collect(),
        )),
        other => Some(other),
    }
}

/// `discardNullValuesFromPatch`: drops `null` members of maps, at every
/// depth.
fn discard_nulls(value: &mut Value) {
    match value {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(discard_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(discard_nulls),
        _ => {}
    }
}
