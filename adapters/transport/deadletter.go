package transport

// Metadata keys of dead letters: the runtime writes the first two on what
// it sends to the poison target, and the dlq command the third on what it
// replays. Unlike the poison keys they are no framework keys: a replayed
// message keeps first_poisoned_at through its broker, so that a second
// poisoning still knows the first.
const (
	// MetadataPoisonedAt is when the message was poisoned (RFC 3339, UTC).
	MetadataPoisonedAt = "poisoned_at"
	// MetadataFirstPoisonedAt is when the message was first poisoned,
	// before any replay (RFC 3339, UTC).
	MetadataFirstPoisonedAt = "first_poisoned_at"
	// MetadataReplayed marks a message the dlq command sent back to its
	// binding: the time of the replay (RFC 3339, UTC).
	MetadataReplayed = "replayed"
)
