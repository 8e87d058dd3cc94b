// Package forktest checks the fork seam as a new user meets it: on a copy
// of the tree it deletes the sample, follows the README's "Add a handler"
// and docs/fork.md, and wants the result to build, vet, pass its tests
// and run against the brokers as the README says.
package forktest
