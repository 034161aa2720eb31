package server

import (
	_ "embed"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	v1reflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1alphareflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// api.binpb is the API's descriptor set with source info, written by `make
// generate` (buf build). Generated Go code drops comments; serving this set
// through reflection lets `grpcurl describe` show every RPC's and field's
// documentation.
//
//go:embed api.binpb
var apiDescriptors []byte

func apiFiles() (*protoregistry.Files, error) {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(apiDescriptors, &set); err != nil {
		return nil, fmt.Errorf("api descriptors: %w", err)
	}
	return protodesc.NewFiles(&set)
}

// registerReflection serves reflection (v1 and v1alpha) from the documented
// descriptors, falling back to the compiled-in registry for everything else
// (health, reflection itself).
func registerReflection(srv *grpc.Server) {
	files, err := apiFiles()
	if err != nil {
		reflection.Register(srv)
		return
	}
	opts := reflection.ServerOptions{Services: srv, DescriptorResolver: documented{files}}
	v1reflectiongrpc.RegisterServerReflectionServer(srv, reflection.NewServerV1(opts))
	v1alphareflectiongrpc.RegisterServerReflectionServer(srv, reflection.NewServer(opts))
}

type documented struct{ api *protoregistry.Files }

func (d documented) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if fd, err := d.api.FindFileByPath(path); err == nil {
		return fd, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

func (d documented) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if desc, err := d.api.FindDescriptorByName(name); err == nil {
		return desc, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}
