package server

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// grpc-go answers a request body that does not decode (a string field
// holding invalid UTF-8, a truncated field) with INTERNAL before any
// interceptor runs, which blames the server for the client's bytes and
// logs it as a fault. The codec below remembers the decode error instead,
// keyed by the message it was decoding, and the first interceptor answers
// INVALID_ARGUMENT with the decoder's words.

// undecodable holds the decode error of each message that failed, until
// the interceptor takes it.
var undecodable sync.Map // message pointer → error

// lenientCodec is the proto codec, except that a decode error is kept for
// rejectUndecodable instead of failing the call with INTERNAL.
type lenientCodec struct{ encoding.CodecV2 }

func newLenientCodec() lenientCodec { return lenientCodec{encoding.GetCodecV2("proto")} }

func (c lenientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if err := c.CodecV2.Unmarshal(data, v); err != nil {
		undecodable.Store(v, err)
	}
	return nil
}

// takeDecodeError returns and forgets the decode error of msg, if any.
func takeDecodeError(msg any) error {
	err, ok := undecodable.LoadAndDelete(msg)
	if !ok {
		return nil
	}
	return status.Errorf(codes.InvalidArgument, "the request is not a valid protobuf message: %v", err)
}

// rejectUndecodableUnary runs first after logging, for every call
// (authenticated or not), so no kept error outlives its call.
func rejectUndecodableUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := takeDecodeError(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// rejectUndecodableStream checks every message a stream receives.
func rejectUndecodableStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &decodeCheckedStream{ServerStream: ss})
}

type decodeCheckedStream struct{ grpc.ServerStream }

func (s *decodeCheckedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return takeDecodeError(m)
}
