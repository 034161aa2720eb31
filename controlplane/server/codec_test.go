package server

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// rawCodec sends bytes as they are, so a test can send what no well-behaved
// client would marshal.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}
func (rawCodec) Name() string { return "proto" }

func TestUndecodableRequestIsInvalidArgumentAndWritesNothing(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	// A CreateTaskRequest whose title (field 2) is not UTF-8.
	var body []byte
	body = protowire.AppendTag(body, 2, protowire.BytesType)
	body = protowire.AppendBytes(body, []byte{'o', 0xff, 0xfe, 'k'})
	var reply []byte
	err := b.conn.Invoke(ctx, factoryv1.QueueService_CreateTask_FullMethodName, body, &reply, grpc.ForceCodecV2(rawCodec{}))
	st := wantCode(t, err, codes.InvalidArgument)
	if !strings.Contains(st.Message(), "UTF-8") {
		t.Errorf("message %q does not say what is wrong", st.Message())
	}
	// A truncated field.
	err = b.conn.Invoke(ctx, factoryv1.QueueService_CreateTask_FullMethodName, []byte{0x12, 0x40, 'x'}, &reply, grpc.ForceCodecV2(rawCodec{}))
	wantCode(t, err, codes.InvalidArgument)

	resp, err := b.client.ListTasks(ctx, &factoryv1.ListTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetTasks()) != 0 {
		t.Fatalf("an undecodable request wrote %d tasks", len(resp.GetTasks()))
	}
	// Nothing is kept once the calls are answered.
	n := 0
	undecodable.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d decode errors kept after their calls", n)
	}
}
