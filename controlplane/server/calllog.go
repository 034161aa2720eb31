package server

import (
	"context"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// callLevel is the level a finished call is logged at. Successful calls
// are the hot path (thousands per second): they go at debug, so the
// default log shows what went wrong, not traffic. So do refusals by the
// rate limit during a flood (the limiter warns once a minute per caller
// instead) and refusals by the policy (each is in the audit log, where a
// caller looping on one makes one entry with a count, not a line per
// call).
func callLevel(c codes.Code) slog.Level {
	switch c {
	case codes.OK, codes.Canceled, codes.DeadlineExceeded, codes.ResourceExhausted, codes.PermissionDenied:
		return slog.LevelDebug
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// logUnary logs each finished unary call at callLevel, with the fields
// go-grpc-middleware's logging interceptor writes (which the stream chain
// still uses). Unlike that interceptor, it builds a line only when the
// logger takes its level: the library's built every field of every call
// first, about 5 % of a claim's CPU when only failures are logged.
func logUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		code := status.Code(err)
		level := callLevel(code)
		if !log.Enabled(ctx, level) {
			return resp, err
		}
		service, method := splitFullMethod(info.FullMethod)
		attrs := make([]slog.Attr, 0, 10)
		attrs = append(attrs,
			slog.String("protocol", "grpc"),
			slog.String("grpc.component", "server"),
			slog.String("grpc.service", service),
			slog.String("grpc.method", method),
			slog.String("grpc.method_type", "unary"),
			slog.String("grpc.start_time", start.Format(time.RFC3339)),
		)
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			attrs = append(attrs, slog.String("peer.address", p.Addr.String()))
		}
		attrs = append(attrs, slog.String("grpc.code", code.String()))
		if err != nil {
			attrs = append(attrs, slog.String("grpc.error", err.Error()))
		}
		attrs = append(attrs, slog.String("grpc.time_ms", formatMillis(time.Since(start))))
		log.LogAttrs(ctx, level, "finished call", attrs...)
		return resp, err
	}
}

// splitFullMethod splits "/pkg.Service/Method".
func splitFullMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

// formatMillis writes d in milliseconds, as the library's grpc.time_ms.
func formatMillis(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64)
}

// streamWorkers is how many goroutines serve calls: enough for every
// agent of a busy host waiting on the store at once. Idle ones cost a
// few KiB each.
func streamWorkers() uint32 {
	return uint32(max(64, 16*runtime.GOMAXPROCS(0)))
}
