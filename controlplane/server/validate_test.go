package server

import (
	"context"
	"strings"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// Every field a client can send carries a rule, so a new field cannot slip
// into the API unchecked. Booleans are exempt: both values are valid.
func TestEveryRequestFieldHasARule(t *testing.T) {
	seen := map[protoreflect.FullName]bool{}
	var check func(md protoreflect.MessageDescriptor)
	check = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] || md.ParentFile().Package() != "factory.v1" {
			return
		}
		seen[md.FullName()] = true
		fields := md.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			if fd.Kind() == protoreflect.BoolKind {
				continue
			}
			// A message that is one member of a required oneof: the oneof's
			// rule says one must be there, and its own fields are checked
			// below (buf lint refuses a field rule that repeats that).
			if o := fd.ContainingOneof(); o != nil && fd.Message() != nil &&
				proto.GetExtension(o.Options(), validate.E_Oneof).(*validate.OneofRules).GetRequired() {
				check(fd.Message())
				continue
			}
			if !proto.HasExtension(fd.Options(), validate.E_Field) {
				t.Errorf("%s has no buf.validate rule", fd.FullName())
			}
			if fd.Message() != nil && !fd.IsMap() {
				check(fd.Message())
			}
		}
	}
	for _, md := range requestMessages() {
		check(md)
	}
	if len(seen) < 10 {
		t.Fatalf("checked only %d request messages", len(seen))
	}
}

func TestViolationsNameEveryFieldInDetailsAndMessage(t *testing.T) {
	b := setup(t, nil)
	_, err := b.client.CreateTask(context.Background(), &factoryv1.CreateTaskRequest{
		Title: "\t", Priority: 1001, Labels: map[string]string{"bad key": "v"},
	})
	st := wantCode(t, err, codes.InvalidArgument)
	var got []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				got = append(got, v.GetField())
				if v.GetDescription() == "" {
					t.Errorf("violation of %s has no description", v.GetField())
				}
			}
		}
	}
	want := []string{"title", "priority", `labels["bad key"]`}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("violations %q, want %q", got, want)
	}
	for _, f := range want {
		if !strings.Contains(st.Message(), f+": ") {
			t.Errorf("message %q does not name %s", st.Message(), f)
		}
	}
}

func TestStreamRequestsAreValidated(t *testing.T) {
	b := setup(t, nil)
	stream, err := b.client.WatchTasks(context.Background(), &factoryv1.WatchTasksRequest{TaskIds: []string{"ok", "not an id"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	st, _ := status.FromError(err)
	if st.Code() != codes.InvalidArgument || fieldOf(st) != "task_ids[1]" {
		t.Fatalf("got %v (field %q), want INVALID_ARGUMENT on task_ids[1]", err, fieldOf(st))
	}
}
