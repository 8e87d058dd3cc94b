package ports

import "time"

// Clock tells the time; tests give a fixed one.
type Clock interface {
	Now() time.Time
}
