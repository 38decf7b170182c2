//! The field numbers of `testbed.v1.Event` and of every message inside it:
//! the one table that [`EventRef`](super::EventRef)'s decoder and
//! [`event_writer`](super::event_writer)'s encoder both use instead of
//! literal tags.
//!
//! A test checks the table against the generated descriptors
//! ([`crate::FILE_DESCRIPTOR_SET`]): every message reachable from `Event`
//! must be listed here with exactly its fields (names and numbers). A
//! field added, removed or renumbered in `event.proto` fails it until the
//! table follows, and the table names every place (decoder and encoder)
//! that must then follow too.

/// Declares one module of field-number constants per message, and (for
/// the descriptor test) each message's full name and `(field, number)`
/// list.
macro_rules! messages {
    ($(
        $(#[$doc:meta])*
        $module:ident = $message:literal {
            $($constant:ident = $field:literal $number:literal,)*
        }
    )*) => {
        $(
            $(#[$doc])*
            pub(crate) mod $module {
                $(
                    #[doc = concat!("`", $field, "`.")]
                    pub(crate) const $constant: u32 = $number;
                )*

                /// The message's full name and its fields.
                #[cfg(test)]
                pub(crate) const TABLE: (&str, &[(&str, u32)]) =
                    ($message, &[$(($field, $number)),*]);
            }
        )*

        /// Every message of the table.
        #[cfg(test)]
        pub(crate) const ALL: &[(&str, &[(&str, u32)])] = &[$($module::TABLE),*];
    };
}

messages! {
    /// `testbed.v1.Event`; the payload oneof's members are 10 to 12.
    event = "testbed.v1.Event" {
        EVENT_ID = "event_id" 1,
        DEVICE_ID = "device_id" 2,
        OBSERVED_AT = "observed_at" 3,
        LABELS = "labels" 4,
        RUN_ID = "run_id" 5,
        GPU = "gpu" 10,
        TOKENS = "tokens" 11,
        METRIC = "metric" 12,
    }
    /// An entry of `Event.labels` (a `map` is a repeated entry message).
    label = "testbed.v1.Event.LabelsEntry" {
        KEY = "key" 1,
        VALUE = "value" 2,
    }
    /// `testbed.v1.GpuSample`.
    gpu = "testbed.v1.GpuSample" {
        GPU_INDEX = "gpu_index" 1,
        UTILIZATION = "utilization" 2,
        MEMORY_USED_BYTES = "memory_used_bytes" 3,
        MEMORY_TOTAL_BYTES = "memory_total_bytes" 4,
        TEMPERATURE_CELSIUS = "temperature_celsius" 5,
        POWER_WATTS = "power_watts" 6,
    }
    /// `testbed.v1.TokenUsage`.
    tokens = "testbed.v1.TokenUsage" {
        MODEL = "model" 1,
        TENANT = "tenant" 2,
        PROMPT_TOKENS = "prompt_tokens" 3,
        COMPLETION_TOKENS = "completion_tokens" 4,
        LATENCY = "latency" 5,
    }
    /// `testbed.v1.Metric`.
    metric = "testbed.v1.Metric" {
        NAME = "name" 1,
        VALUE = "value" 2,
        UNIT = "unit" 3,
    }
    /// `google.protobuf.Timestamp` (`Event.observed_at`).
    timestamp = "google.protobuf.Timestamp" {
        SECONDS = "seconds" 1,
        NANOS = "nanos" 2,
    }
    /// `google.protobuf.Duration` (`TokenUsage.latency`).
    duration = "google.protobuf.Duration" {
        SECONDS = "seconds" 1,
        NANOS = "nanos" 2,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use prost::Message as _;
    use prost_types::{DescriptorProto, FileDescriptorSet};

    use super::ALL;

    /// Messages of the descriptor set by full name (`testbed.v1.Event`,
    /// `testbed.v1.Event.LabelsEntry`, ...), nested ones included.
    fn messages() -> BTreeMap<String, DescriptorProto> {
        fn add(
            prefix: &str,
            message: &DescriptorProto,
            into: &mut BTreeMap<String, DescriptorProto>,
        ) {
            let name = format!("{prefix}.{}", message.name());
            for nested in &message.nested_type {
                add(&name, nested, into);
            }
            into.insert(name, message.clone());
        }
        let fds = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let mut out = BTreeMap::new();
        for file in &fds.file {
            for message in &file.message_type {
                add(file.package(), message, &mut out);
            }
        }
        out
    }

    /// The table holds exactly the generated descriptors' fields (names and
    /// numbers) of `Event` and of every message reachable from it, so a
    /// change to `event.proto` that the hand-written decoder and encoder
    /// do not follow fails here.
    #[test]
    fn the_table_is_the_descriptors() {
        let descriptors = messages();
        let table: BTreeMap<&str, &[(&str, u32)]> = ALL.iter().copied().collect();
        assert_eq!(table.len(), ALL.len(), "a message is listed twice");
        for (message, fields) in ALL {
            let descriptor = descriptors
                .get(*message)
                .unwrap_or_else(|| panic!("{message} is not in the descriptor set"));
            let theirs: BTreeSet<(&str, u32)> = descriptor
                .field
                .iter()
                .map(|f| (f.name(), u32::try_from(f.number()).unwrap()))
                .collect();
            let ours: BTreeSet<(&str, u32)> = fields.iter().copied().collect();
            assert_eq!(
                ours.len(),
                fields.len(),
                "{message}: a field is listed twice"
            );
            assert_eq!(
                ours, theirs,
                "{message}: the table differs from event.proto"
            );
        }
        // Every message an `Event` holds, at any depth, is in the table.
        let mut todo = vec!["testbed.v1.Event".to_owned()];
        let mut seen = BTreeSet::new();
        while let Some(message) = todo.pop() {
            assert!(
                table.contains_key(message.as_str()),
                "{message} is inside Event but not in the table"
            );
            for field in &descriptors[&message].field {
                let inner = field.type_name().trim_start_matches('.');
                if !inner.is_empty() && seen.insert(inner.to_owned()) {
                    todo.push(inner.to_owned());
                }
            }
        }
        assert_eq!(
            seen.len() + 1,
            table.len(),
            "the table lists a message Event does not hold"
        );
    }
}
