# Build the service; the final image holds the binary only.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/hexmill ./cmd/hexmill

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/hexmill /hexmill
EXPOSE 8080
ENTRYPOINT ["/hexmill"]
