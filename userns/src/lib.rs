//! idshift's user namespaces: host ID ranges that no two containers or pods
//! share ([`Allocator`]), creating and joining user namespaces
//! ([`UserNamespace`]), and validation of OCI ID mappings
//! ([`validate_mappings`]).

mod alloc;
mod idmap;
mod ns;
mod sys;

pub use alloc::{subid_overlaps, AllocError, Allocator, AllocatorConfig, KUBERNETES_ALIGNMENT};
pub use idmap::{
    map_text, validate_mappings, IdKind, IdMap, IdRange, MappingError, LAST_ID, MAX_EXTENTS,
    MAX_MAP_TEXT,
};
pub use ns::{join_before_exec, namespace_name, open_namespace, NsError, UserNamespace};
