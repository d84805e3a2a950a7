//! Every resource of a bundle (entries and their contained resources), indexed once by every
//! name a reference may use, so that resolving a reference is one hash look-up.

use super::BundleError;
use super::json::Json;
use super::value::{Node, Origin};

/// One resource of the bundle.
#[derive(Debug, Clone, Copy)]
pub(super) struct Resource<'v> {
    /// The resource object.
    pub(super) value: Json<'v>,
    /// Its `resourceType`.
    pub(super) kind: &'v str,
    /// The entry's `fullUrl` (entries only).
    pub(super) full_url: Option<&'v str>,
    /// Where it is, for error paths.
    pub(super) origin: Origin,
    /// The resource that contains it (contained resources only).
    pub(super) container: Option<usize>,
}

impl<'v> Resource<'v> {
    /// The resource as a node at its own location.
    pub(super) fn node(&self) -> Node<'v, 'static> {
        Node::root(self.value, self.origin)
    }
}

/// The names a reference may use for a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key<'v> {
    /// The entry's `fullUrl` (`urn:uuid:…`, an absolute URL).
    Url(&'v str),
    /// `Type/id`.
    TypeId(&'v str, &'v str),
    /// A bare id (also what `urn:uuid:X` falls back to).
    Id(&'v str),
    /// `#id` inside the given container.
    Contained(usize, &'v str),
    /// `#id` in any container (tolerated when the container does not hold it).
    AnyContained(&'v str),
}

/// The bundle's resources in document order (an entry, then its contained resources).
#[derive(Debug, Default)]
pub(super) struct Index<'v> {
    /// The resources.
    pub(super) resources: Vec<Resource<'v>>,
    /// Reference names and positions in `resources`, sorted by name, one per name: the first
    /// resource to claim a name keeps it. (A bundle holds a few dozen resources: a sorted list
    /// costs less than hashing every name, and no input makes it slower.)
    keys: Vec<(Key<'v>, usize)>,
}

impl<'v> Index<'v> {
    /// Indexes `entry[]` of a bundle. Entries without a resource (a `DELETE` request) are
    /// skipped; an entry or resource that is not an object, or a resource without
    /// `resourceType`, is an error.
    pub(super) fn build(bundle: &Node<'v, '_>, wrapped: bool) -> Result<Self, BundleError> {
        let mut index = Index::default();
        let Some(entries) = bundle.get("entry") else {
            return Ok(index);
        };
        if !entries.value.is_array() {
            return Err(entries.invalid("an array"));
        }
        for entry in entries.items() {
            // The true array index (`items` skips `null` elements), for error paths.
            let position = entry.position().unwrap_or(0);
            entry.object()?;
            let full_url = entry
                .value
                .get("fullUrl")
                .and_then(Json::as_str)
                .map(str::trim);
            let Some(resource) = entry.get("resource") else {
                continue;
            };
            let origin = Origin {
                wrapped,
                entry: Some(position),
                contained: None,
            };
            let container = index.add(resource.value, full_url, origin, None)?;
            if let Some(contained) = resource.get("contained") {
                for value in contained.items() {
                    let origin = Origin {
                        contained: Some(value.position().unwrap_or(0)),
                        ..origin
                    };
                    index.add(value.value, None, origin, Some(container))?;
                }
            }
        }
        // Stable: among equal names, the first claim stays first and is the one kept.
        index.keys.sort_by_key(|(key, _)| *key);
        index.keys.dedup_by_key(|(key, _)| *key);
        Ok(index)
    }

    /// Adds one resource under all its names; answers its position.
    fn add(
        &mut self,
        value: Json<'v>,
        full_url: Option<&'v str>,
        origin: Origin,
        container: Option<usize>,
    ) -> Result<usize, BundleError> {
        let node = Node::root(value, origin);
        node.object()?;
        let kind = match node.get("resourceType") {
            Some(kind) => match kind.value.as_str().map(str::trim) {
                Some(text) if !text.is_empty() => text,
                _ => return Err(kind.invalid("a resource type")),
            },
            None => {
                return Err(BundleError::Missing {
                    path: node.path(),
                    key: "resourceType",
                });
            }
        };
        let id = value
            .get("id")
            .and_then(Json::as_str)
            .map(str::trim)
            .filter(|id| !id.is_empty());
        let position = self.resources.len();
        self.resources.push(Resource {
            value,
            kind,
            full_url: full_url.filter(|url| !url.is_empty()),
            origin,
            container,
        });
        let mut claim = |key| self.keys.push((key, position));
        match container {
            Some(container) => {
                if let Some(id) = id {
                    claim(Key::Contained(container, id));
                    claim(Key::AnyContained(id));
                }
            }
            None => {
                if let Some(url) = full_url.filter(|url| !url.is_empty()) {
                    claim(Key::Url(url));
                }
                if let Some(id) = id {
                    claim(Key::TypeId(kind, id));
                    claim(Key::Id(id));
                }
            }
        }
        Ok(position)
    }

    /// The position of the resource that claimed `key`.
    fn find(&self, key: &Key<'_>) -> Option<usize> {
        self.keys
            .binary_search_by(|(claimed, _)| claimed.cmp(key))
            .ok()
            .and_then(|i| self.keys.get(i))
            .map(|(_, position)| *position)
    }

    /// The resource a reference written in resource `from` names, if any.
    ///
    /// Tried in order: `#id` in the container of `from` (then in any container); the exact
    /// `fullUrl`; `urn:uuid:X` or a bare `X` as an id; the last `Type/id` of a relative or
    /// absolute URL (a `_history/n` suffix ignored).
    pub(super) fn resolve(&self, from: usize, reference: &str) -> Option<usize> {
        let reference = reference.trim();
        if let Some(id) = reference.strip_prefix('#') {
            let container = self
                .resources
                .get(from)
                .and_then(|r| r.container)
                .unwrap_or(from);
            return self
                .find(&Key::Contained(container, id))
                .or_else(|| self.find(&Key::AnyContained(id)));
        }
        if let Some(found) = self.find(&Key::Url(reference)) {
            return Some(found);
        }
        let bare = reference.strip_prefix("urn:uuid:").unwrap_or(reference);
        if !bare.contains('/') {
            return self.find(&Key::Id(bare));
        }
        let mut parts = reference.trim_end_matches('/').rsplit('/');
        let (mut id, mut kind) = (parts.next()?, parts.next()?);
        if kind == "_history" {
            (id, kind) = (parts.next()?, parts.next()?);
        }
        self.find(&Key::TypeId(kind, id))
    }

    /// The resource at a position.
    pub(super) fn get(&self, position: usize) -> Option<&Resource<'v>> {
        self.resources.get(position)
    }

    /// Positions of the resources of one type, in document order.
    pub(super) fn of_kind<'s>(&'s self, kind: &'s str) -> impl Iterator<Item = usize> + 's {
        self.resources
            .iter()
            .enumerate()
            .filter(move |(_, r)| r.kind == kind)
            .map(|(position, _)| position)
    }
}

#[cfg(test)]
mod tests {
    use super::super::json::Tree;
    use super::*;
    use rstest::rstest;
    use serde_json::{Value, json};

    fn bundle() -> Value {
        json!({ "resourceType": "Bundle", "entry": [
            { "fullUrl": "urn:uuid:aaa", "resource": { "resourceType": "Patient", "id": "p1" } },
            { "fullUrl": "http://x/fhir/Medication/m1", "resource": { "resourceType": "Medication", "id": "m1" } },
            { "resource": { "resourceType": "MedicationRequest", "id": "r1",
                "contained": [{ "resourceType": "Medication", "id": "c1" }] } },
            { "resource": { "resourceType": "MedicationRequest", "id": "r2",
                "contained": [{ "resourceType": "Medication", "id": "c1" }] } },
            { "request": { "method": "DELETE", "url": "Patient/old" } }
        ]})
    }

    #[rstest]
    #[case::ok_urn(2, "urn:uuid:aaa", Some(0))]
    #[case::ok_type_id(2, "Patient/p1", Some(0))]
    #[case::ok_absolute_url(2, "http://x/fhir/Medication/m1", Some(1))]
    #[case::ok_other_base(2, "https://other/Medication/m1", Some(1))]
    #[case::ok_history(2, "Medication/m1/_history/2", Some(1))]
    #[case::ok_bare_id(2, "p1", Some(0))]
    #[case::ok_urn_as_id(2, "urn:uuid:p1", Some(0))]
    #[case::ok_contained_own(2, "#c1", Some(3))]
    #[case::ok_contained_second(4, "#c1", Some(5))]
    #[case::ok_contained_from_contained(5, "#c1", Some(5))]
    #[case::ok_contained_elsewhere(0, "#c1", Some(3))]
    #[case::err_unknown(2, "urn:uuid:zzz", None)]
    #[case::err_wrong_type(2, "Practitioner/p1", None)]
    #[case::err_empty(2, "", None)]
    #[case::err_slash(2, "/", None)]
    fn resolve(#[case] from: usize, #[case] reference: &str, #[case] expected: Option<usize>) {
        let value = bundle();
        let value = Tree::from_value(&value);
        let root = Node::root(value.root(), Origin::default());
        let index = Index::build(&root, false).unwrap();
        assert_eq!(index.resources.len(), 6);
        assert_eq!(index.resolve(from, reference), expected);
    }

    #[rstest]
    #[case::err_entry_not_object(json!({ "entry": [1] }), "entry[0]: expected an object, found 1")]
    #[case::err_entry_not_array(json!({ "entry": {} }), "entry: expected an array, found an object")]
    #[case::err_no_type(json!({ "entry": [{ "resource": { "id": "x" } }] }), "entry[0].resource: `resourceType` is missing")]
    #[case::err_type_number(json!({ "entry": [{ "resource": { "resourceType": 1 } }] }), "entry[0].resource.resourceType: expected a resource type, found 1")]
    #[case::err_contained(json!({ "entry": [{ "resource": { "resourceType": "X", "contained": ["y"] } }] }), "entry[0].resource.contained[0]: expected an object, found \"y\"")]
    #[case::err_after_nulls(json!({ "entry": [null, { "resource": null }, { "resource": { "resourceType": "X", "contained": [null, 2] } }] }), "entry[2].resource.contained[1]: expected an object, found 2")]
    fn build_errors(#[case] value: Value, #[case] expected: &str) {
        let value = Tree::from_value(&value);
        let root = Node::root(value.root(), Origin::default());
        let error = Index::build(&root, false).unwrap_err();
        assert_eq!(error.to_string(), expected);
    }
}
