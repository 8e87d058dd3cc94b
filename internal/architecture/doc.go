// Package architecture holds the test that enforces hexmill's dependency
// rule: domain/ sees only ports/ and the standard library; ports/ sees only
// the standard library.
package architecture
