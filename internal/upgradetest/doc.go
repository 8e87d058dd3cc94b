// Package upgradetest proves docs/fork.md's upgrade promise on this
// checkout's own history: a fork made with today's procedure (make rename
// NAME=fleet, the sample replaced by the README's battery handler) merges
// upstream with conflicts in the fork's own files only, which the one
// documented step (make keep-yours) resolves, and then builds, vets and
// passes its tests.
package upgradetest
