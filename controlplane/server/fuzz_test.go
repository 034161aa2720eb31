package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"buf.build/go/protovalidate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store/sqlite"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// FuzzValidateCreateTask feeds arbitrary bytes to request validation, the
// way a hostile client would:
//   - decoded as any request of the API, validation never panics and fails
//     only with rule violations (never a rule that cannot be evaluated);
//   - decoded as a CreateTaskRequest, a request the rules accept goes on to
//     the domain and a real store, which either creates the task or refuses
//     it as INVALID_ARGUMENT naming a field (or ALREADY_EXISTS for a
//     repeated id), never INTERNAL: the rules leave nothing the store
//     chokes on.
//
// `make fuzz` runs it for a bounded time; testdata/fuzz holds the corpus.
func FuzzValidateCreateTask(f *testing.F) {
	for _, req := range []*factoryv1.CreateTaskRequest{
		{Title: "Summarise the RFC", Role: "researcher"},
		{TaskId: "task-042", Title: "Build the parser", Kind: "build", PayloadJson: `{"repo":"factory","n":[1,2,3]}`,
			Role: "builder", Assignee: "forge", Priority: 1000, MaxAttempts: 100, ApprovalTier: 3,
			Labels: map[string]string{"team": "core", "env/stage": "prod"}, InitialState: factoryv1.TaskState_TASK_STATE_BACKLOG,
			RunAfter: timestamppb.New(time.Date(2026, 11, 27, 7, 0, 0, 0, time.UTC))},
		{Title: "needs another", DependsOn: []string{"task-041"}},
		{TaskId: "self", Title: "loop", DependsOn: []string{"self"}},
		{Title: "  padded  ", PayloadJson: "[]", Priority: -1000, InitialState: factoryv1.TaskState_TASK_STATE_DONE},
		{Title: "bad json", PayloadJson: "{"},
		{Title: "\u00a0"},
		{Title: "x", InitialState: factoryv1.TaskState_TASK_STATE_IN_PROGRESS},
		{Title: "far future", RunAfter: &timestamppb.Timestamp{Seconds: 1 << 40}},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}

	validator, err := requestValidator()
	if err != nil {
		f.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: f.TempDir() + "/factory.db", Logger: log})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	q, err := queue.New(queue.Config{Store: st, Logger: log})
	if err != nil {
		f.Fatal(err)
	}
	handlers := &queueServer{q: q, log: log}
	intercept := validateUnary(validator, log)
	info := &grpc.UnaryServerInfo{FullMethod: factoryv1.QueueService_CreateTask_FullMethodName}
	create := func(ctx context.Context, req any) (any, error) {
		return handlers.CreateTask(ctx, req.(*factoryv1.CreateTaskRequest))
	}
	var requestTypes []protoreflect.MessageType
	for _, desc := range requestMessages() {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(desc.FullName())
		if err != nil {
			f.Fatal(err)
		}
		requestTypes = append(requestTypes, mt)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		for _, mt := range requestTypes {
			msg := mt.New().Interface()
			if proto.Unmarshal(data, msg) != nil {
				continue // gRPC refuses undecodable bytes before validation
			}
			var verr *protovalidate.ValidationError
			if err := validator.Validate(msg); err != nil && !errors.As(err, &verr) {
				t.Fatalf("%s: validation failed to run: %v", mt.Descriptor().FullName(), err)
			}
		}

		req := &factoryv1.CreateTaskRequest{}
		if proto.Unmarshal(data, req) != nil {
			return
		}
		_, err := intercept(context.Background(), req, info, create)
		switch st := status.Convert(err); st.Code() {
		case codes.OK, codes.AlreadyExists:
		case codes.InvalidArgument:
			if fieldOf(st) == "" {
				t.Fatalf("INVALID_ARGUMENT without a field violation: %v", err)
			}
		default:
			t.Fatalf("request %v: got %v, want success or INVALID_ARGUMENT naming a field", req, err)
		}
	})
}
