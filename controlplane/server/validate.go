package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"buf.build/go/protovalidate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// requestValidator enforces the field rules annotated in the .proto files
// (buf.validate). Every request message of the API is compiled up front, so
// a rule that does not compile fails the server's start, not the first
// call that happens to use it.
var requestValidator = sync.OnceValues(func() (protovalidate.Validator, error) {
	v, err := protovalidate.New(protovalidate.WithMessageDescriptors(requestMessages()...))
	if err != nil {
		return nil, fmt.Errorf("compiling the API's validation rules: %w", err)
	}
	return v, nil
})

// requestMessages lists the input message of every RPC in the API.
func requestMessages() []protoreflect.MessageDescriptor {
	var out []protoreflect.MessageDescriptor
	for _, file := range []protoreflect.FileDescriptor{factoryv1.File_factory_v1_queue_proto, factoryv1.File_factory_v1_access_proto, factoryv1.File_factory_v1_ops_proto, factoryv1.File_factory_v1_fleet_proto} {
		services := file.Services()
		for i := range services.Len() {
			methods := services.Get(i).Methods()
			for j := range methods.Len() {
				out = append(out, methods.Get(j).Input())
			}
		}
	}
	return out
}

// validateUnary refuses a request that breaks its message's rules with
// INVALID_ARGUMENT, one google.rpc.BadRequest field violation per broken
// rule, before the handler sees it.
func validateUnary(v protovalidate.Validator, log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := validateRequest(ctx, v, log, req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// validateStream checks every message a client sends on a stream.
func validateStream(v protovalidate.Validator, log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &validatedStream{ServerStream: ss, v: v, log: log})
	}
}

type validatedStream struct {
	grpc.ServerStream
	v   protovalidate.Validator
	log *slog.Logger
}

func (s *validatedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return validateRequest(s.Context(), s.v, s.log, m)
}

func validateRequest(ctx context.Context, v protovalidate.Validator, log *slog.Logger, req any) error {
	msg, ok := req.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "request of type %T is not a protobuf message", req)
	}
	if err := v.Validate(msg); err != nil {
		return toStatus(ctx, log, err)
	}
	return nil
}
