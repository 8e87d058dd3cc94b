# Build the service; the final image holds the binary only.
#
# The builder and runtime images are build arguments, so that a machine
# with no registry can build from stand-ins (.ci/docker-images.sh makes
# them from Debian packages); by default the official images.
ARG GO_IMAGE=golang:1.26
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/hexmill ./cmd/hexmill

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/hexmill /hexmill
# distroless' nonroot user, by number so that any runtime image will do.
USER 65532:65532
# The service writes no file: run it with a read-only root filesystem, no
# capabilities and no privilege escalation (docker run --read-only
# --cap-drop ALL --security-opt no-new-privileges; Kubernetes
# securityContext readOnlyRootFilesystem: true, runAsNonRoot: true,
# allowPrivilegeEscalation: false, capabilities.drop: [ALL]); no tmpfs is
# needed. docker-compose.yml does so; see docs/security.md.
EXPOSE 8080
ENTRYPOINT ["/hexmill"]
