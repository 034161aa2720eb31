package server

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// id_prefix is what the CLI resolves a shortened id with: the handlers
// pass it to the store, and the API refuses what no id could start with.
func TestListByIDPrefix(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	for _, id := range []string{"deploy-api", "build", "deploy-db", "deploy"} {
		create(t, b, &factoryv1.CreateTaskRequest{TaskId: id, Title: "task " + id})
	}
	for _, c := range []struct {
		req  *factoryv1.ListTasksRequest
		want string
	}{
		{&factoryv1.ListTasksRequest{IdPrefix: "deploy"}, "deploy-api,deploy-db,deploy"},
		{&factoryv1.ListTasksRequest{IdPrefix: "deploy-", PageSize: 1}, "deploy-api,deploy-db"},
		{&factoryv1.ListTasksRequest{IdPrefix: "deploy", NewestFirst: true}, "deploy,deploy-db,deploy-api"},
		{&factoryv1.ListTasksRequest{IdPrefix: "b"}, "build"},
		{&factoryv1.ListTasksRequest{IdPrefix: "Deploy"}, ""},
	} {
		if ids, _ := listTaskIDs(t, b, c.req); strings.Join(ids, ",") != c.want {
			t.Errorf("ListTasks(id_prefix %q): %v, want %s", c.req.GetIdPrefix(), ids, c.want)
		}
	}
	for _, prefix := range []string{"deploy api", "01a2%", strings.Repeat("a", 129)} {
		_, err := b.client.ListTasks(ctx, &factoryv1.ListTasksRequest{IdPrefix: prefix})
		if st := wantCode(t, err, codes.InvalidArgument); fieldOf(st) != "id_prefix" {
			t.Errorf("ListTasks(id_prefix %q): violation on %q, want id_prefix", prefix, fieldOf(st))
		}
	}

	forgeSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	forge := b.approvalAs(t, forgeSecret)
	var ids []string
	for range 3 {
		ids = append(ids, requestTier2(t, forge, "forge").GetId())
	}
	// Agents list requests too: an agent waiting on its own request may
	// name it shortened.
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{ids[1], ids[1:2]},
		{ids[2][:len(ids[2])-1], ids[2:3]},
		{"ffff", nil},
	} {
		res, err := forge.ap.ListApprovals(ctx, &factoryv1.ListApprovalsRequest{IdPrefix: c.prefix})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range res.GetApprovals() {
			got = append(got, a.GetId())
		}
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("ListApprovals(id_prefix %q): %v, want %v", c.prefix, got, c.want)
		}
	}
	_, err := forge.ap.ListApprovals(ctx, &factoryv1.ListApprovalsRequest{IdPrefix: "a/b"})
	if st := wantCode(t, err, codes.InvalidArgument); fieldOf(st) != "id_prefix" {
		t.Errorf("ListApprovals(id_prefix a/b): violation on %q, want id_prefix", fieldOf(st))
	}
}
