package upgradetest

import (
	"os"
	"testing"
)

// TestMain makes the commits of the test's clones independent of the
// user's git configuration (an identity, no signing) and its go commands
// offline: the module cache has what the checkout needs.
func TestMain(m *testing.M) {
	for k, v := range map[string]string{
		"GIT_AUTHOR_NAME": "upgradetest", "GIT_AUTHOR_EMAIL": "upgradetest@example.com",
		"GIT_COMMITTER_NAME": "upgradetest", "GIT_COMMITTER_EMAIL": "upgradetest@example.com",
		"GIT_CONFIG_COUNT": "2",
		"GIT_CONFIG_KEY_0": "commit.gpgsign", "GIT_CONFIG_VALUE_0": "false",
		"GIT_CONFIG_KEY_1": "merge.conflictstyle", "GIT_CONFIG_VALUE_1": "merge",
		"GOPROXY": "off", "GOWORK": "off", "GOFLAGS": "-mod=readonly",
	} {
		os.Setenv(k, v)
	}
	os.Exit(m.Run())
}
