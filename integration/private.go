package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Private brokers (StartMosquitto, StartRabbitMQNode) run the broker
// binary when it is installed (found in PATH), and otherwise the broker's
// image in a container of their own. Such a container shares the host's
// network, so the broker listens on the same 127.0.0.1 ports as a process
// would and reaches servers of the test on 127.0.0.1 (the HTTP auth
// backend), and it mounts the temporary directory at the same path, so
// configuration, certificates and persisted state are where the
// configuration says.

// privateContainer starts image with cmd as the test's user, on the host's
// network, with the temporary directory mounted; w, if not nil, is awaited.
func privateContainer(ctx context.Context, image string, cmd []string, env map[string]string, w wait.Strategy) (testcontainers.Container, error) {
	tmp := os.TempDir()
	opts := []testcontainers.ContainerCustomizer{
		testcontainers.WithCmd(cmd...),
		testcontainers.WithEnv(env),
		testcontainers.WithConfigModifier(func(c *container.Config) {
			c.User = strconv.Itoa(os.Getuid()) + ":" + strconv.Itoa(os.Getgid())
		}),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.NetworkMode = "host"
			hc.Binds = append(hc.Binds, tmp+":"+tmp)
		}),
	}
	if w != nil {
		opts = append(opts, testcontainers.WithWaitStrategy(w))
	}
	ctr, err := testcontainers.Run(ctx, image, opts...)
	if err != nil {
		if ctr != nil {
			err = fmt.Errorf("%w\n%s", err, containerLogs(ctr))
			_ = testcontainers.TerminateContainer(ctr)
		}
		return nil, err
	}
	return ctr, nil
}

// containerLogs is the end of a container's output, for error messages.
func containerLogs(ctr testcontainers.Container) string {
	r, err := ctr.Logs(context.Background())
	if err != nil {
		return "(no logs: " + err.Error() + ")"
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

// containerRunning reports whether the container still runs.
func containerRunning(ctx context.Context, ctr testcontainers.Container) bool {
	st, err := ctr.State(ctx)
	return err == nil && st.Running
}
