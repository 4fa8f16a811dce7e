# syntax=docker/dockerfile:1
# Build a static binary (modernc.org/sqlite is pure Go, so CGO is off).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/pendinglink . && mkdir -p /out/data

# Run as an unprivileged user; the database lives in /data.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pendinglink /usr/local/bin/pendinglink
COPY --from=build --chown=nonroot:nonroot /out/data /data
ENV PENDINGLINK_DB=/data/pendinglink.db PENDINGLINK_ADDR=:8080
VOLUME ["/data"]
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pendinglink"]
CMD ["serve"]
