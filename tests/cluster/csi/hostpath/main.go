// Command hostpath is the test bed's CSI driver: volumes are directories under
// --statedir, snapshots are tarballs (GNU tar: every byte and every piece of metadata), and a
// volume created from a snapshot is the tarball unpacked. It implements the Identity and Controller services the
// external provisioner and snapshotter need, and, given --nodeid, the Node service
// the bed's real kubelet calls (node.go).
//
// The upstream csi-driver-host-path module is not served by the Go module proxy
// reachable here, so the test bed carries this small driver of its own.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const driverName = "hostpath.csi.rewind.dev"

type snapshotMeta struct {
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	SourceVolumeID string    `json:"sourceVolumeId"`
	CreatedAt      time.Time `json:"createdAt"`
	SizeBytes      int64     `json:"sizeBytes"`
}

type driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	stateDir string
	mu       sync.Mutex
}

func idFor(prefix, name string) string {
	sum := sha256.Sum256([]byte(name))
	return prefix + hex.EncodeToString(sum[:8])
}

func (d *driver) volumeDir(id string) string { return filepath.Join(d.stateDir, id) }
func (d *driver) snapshotTar(id string) string {
	return filepath.Join(d.stateDir, "snapshots", id+".tgz")
}
func (d *driver) snapshotMeta(id string) string {
	return filepath.Join(d.stateDir, "snapshots", id+".json")
}

func (d *driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: driverName, VendorVersion: "0.1.0"}, nil
}

func (d *driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{{
		Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}},
	}}}, nil
}

func (d *driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

func (d *driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, c := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
	} {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: c}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

func (d *driver) ValidateVolumeCapabilities(_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if _, err := os.Stat(d.volumeDir(req.GetVolumeId())); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s: %v", req.GetVolumeId(), err)
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{VolumeCapabilities: req.GetVolumeCapabilities()}}, nil
}

func (d *driver) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	id := idFor("vol-", req.GetName())
	dir := d.volumeDir(id)
	capacity := req.GetCapacityRange().GetRequiredBytes()
	if _, err := os.Stat(dir); err == nil {
		return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: id, CapacityBytes: capacity, ContentSource: req.GetVolumeContentSource()}}, nil
	}
	tmp := dir + ".creating"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, status.Errorf(codes.Internal, "creating %s: %v", tmp, err)
	}
	if source := req.GetVolumeContentSource(); source != nil {
		switch {
		case source.GetSnapshot() != nil:
			snapID := source.GetSnapshot().GetSnapshotId()
			if err := untar(d.snapshotTar(snapID), tmp); err != nil {
				_ = os.RemoveAll(tmp)
				return nil, status.Errorf(codes.NotFound, "restoring snapshot %s: %v", snapID, err)
			}
		case source.GetVolume() != nil:
			if err := copyTree(d.volumeDir(source.GetVolume().GetVolumeId()), tmp); err != nil {
				_ = os.RemoveAll(tmp)
				return nil, status.Errorf(codes.NotFound, "cloning volume: %v", err)
			}
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, status.Errorf(codes.Internal, "finishing %s: %v", dir, err)
	}
	log.Printf("created volume %s for %s", id, req.GetName())
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: id, CapacityBytes: capacity, ContentSource: req.GetVolumeContentSource()}}, nil
}

func (d *driver) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.RemoveAll(d.volumeDir(req.GetVolumeId())); err != nil {
		return nil, status.Errorf(codes.Internal, "deleting %s: %v", req.GetVolumeId(), err)
	}
	log.Printf("deleted volume %s", req.GetVolumeId())
	return &csi.DeleteVolumeResponse{}, nil
}

func (d *driver) readMeta(id string) (*snapshotMeta, error) {
	raw, err := os.ReadFile(d.snapshotMeta(id))
	if err != nil {
		return nil, err
	}
	var meta snapshotMeta
	if err := json.Unmarshal(raw, &meta); err != nil {
		return nil, err
	}
	return &meta, nil
}

func toCSI(meta *snapshotMeta) *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId:     meta.ID,
		SourceVolumeId: meta.SourceVolumeID,
		CreationTime:   timestamppb.New(meta.CreatedAt),
		SizeBytes:      meta.SizeBytes,
		ReadyToUse:     true,
	}
}

func (d *driver) CreateSnapshot(_ context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if req.GetName() == "" || req.GetSourceVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "name and source volume are required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	id := idFor("snap-", req.GetName())
	if meta, err := d.readMeta(id); err == nil {
		return &csi.CreateSnapshotResponse{Snapshot: toCSI(meta)}, nil
	}
	source := d.volumeDir(req.GetSourceVolumeId())
	if _, err := os.Stat(source); err != nil {
		return nil, status.Errorf(codes.NotFound, "source volume %s: %v", req.GetSourceVolumeId(), err)
	}
	if err := os.MkdirAll(filepath.Join(d.stateDir, "snapshots"), 0o755); err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	size, err := tarDir(source, d.snapshotTar(id))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "archiving %s: %v", source, err)
	}
	meta := &snapshotMeta{ID: id, Name: req.GetName(), SourceVolumeID: req.GetSourceVolumeId(), CreatedAt: time.Now().UTC(), SizeBytes: size}
	raw, _ := json.Marshal(meta)
	if err := os.WriteFile(d.snapshotMeta(id), raw, 0o644); err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	log.Printf("created snapshot %s of %s", id, req.GetSourceVolumeId())
	return &csi.CreateSnapshotResponse{Snapshot: toCSI(meta)}, nil
}

func (d *driver) DeleteSnapshot(_ context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	_ = os.Remove(d.snapshotTar(req.GetSnapshotId()))
	_ = os.Remove(d.snapshotMeta(req.GetSnapshotId()))
	log.Printf("deleted snapshot %s", req.GetSnapshotId())
	return &csi.DeleteSnapshotResponse{}, nil
}

func (d *driver) ListSnapshots(_ context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var entries []*csi.ListSnapshotsResponse_Entry
	if id := req.GetSnapshotId(); id != "" {
		if meta, err := d.readMeta(id); err == nil {
			entries = append(entries, &csi.ListSnapshotsResponse_Entry{Snapshot: toCSI(meta)})
		}
		return &csi.ListSnapshotsResponse{Entries: entries}, nil
	}
	files, _ := filepath.Glob(filepath.Join(d.stateDir, "snapshots", "*.json"))
	for _, file := range files {
		meta, err := d.readMeta(strings.TrimSuffix(filepath.Base(file), ".json"))
		if err != nil || (req.GetSourceVolumeId() != "" && meta.SourceVolumeID != req.GetSourceVolumeId()) {
			continue
		}
		entries = append(entries, &csi.ListSnapshotsResponse_Entry{Snapshot: toCSI(meta)})
	}
	return &csi.ListSnapshotsResponse{Entries: entries}, nil
}

// tarDir archives source into target (gzip) as a storage system's snapshot would keep it, bit
// for bit with its metadata: GNU tar in POSIX format keeps owners (by number), modes,
// nanosecond times, symlinks, hardlinks, FIFOs and devices, holes and extended attributes,
// the volume's root directory included. Go's archive/tar would round times to the second and
// drop hardlinks, special files and attributes. Returns the bytes of the regular files in it.
func tarDir(source, target string) (int64, error) {
	tmp := target + ".tmp"
	cmd := exec.Command("tar", "--create", "--file", tmp, "--use-compress-program", "gzip -1",
		"--format=posix", "--numeric-owner", "--sparse", "--xattrs", "--xattrs-include=*", "--acls",
		"--ignore-failed-read", "--directory", source, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		// Exit status 1: a file changed while it was read (a live volume, e.g. PostgreSQL's);
		// with --ignore-failed-read, one removed before it was read is left out. A storage
		// system's snapshot is atomic; these are the price of snapshotting with tar.
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			_ = os.Remove(tmp)
			return 0, fmt.Errorf("tar --create: %v: %s", err, out)
		}
	}
	var total int64
	walkErr := filepath.Walk(source, func(path string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			total += info.Size()
		}
		return nil
	})
	if walkErr != nil {
		_ = os.Remove(tmp)
		return 0, walkErr
	}
	return total, os.Rename(tmp, target)
}

// untar unpacks a snapshot made by tarDir into target, every owner, mode, time, link and
// attribute as recorded (directories get theirs after their contents).
func untar(source, target string) error {
	if _, err := os.Stat(source); err != nil {
		return err
	}
	cmd := exec.Command("tar", "--extract", "--file", source, "--gzip", "--numeric-owner",
		"--same-owner", "--same-permissions", "--xattrs", "--xattrs-include=*", "--acls",
		"--directory", target)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("tar --extract: %v: %s", err, out)
	}
	return nil
}

func copyTree(source, target string) error {
	tmp := target + ".clone.tgz"
	defer os.Remove(tmp)
	if _, err := tarDir(source, tmp); err != nil {
		return err
	}
	return untar(tmp, target)
}

func main() {
	endpoint := flag.String("endpoint", "unix:///tmp/csi.sock", "CSI endpoint (unix://path)")
	stateDir := flag.String("statedir", "/tmp/csi-hostpath", "where volumes and snapshots live")
	nodeID := flag.String("nodeid", "", "serve the Node service as this node (empty: no Node service)")
	registrationDir := flag.String("kubelet-registration-dir", "",
		"the kubelet's plugins_registry directory: register with that kubelet (needs --nodeid)")
	flag.Bool("enable-topology", false, "accepted for compatibility")
	flag.Parse()
	socket := strings.TrimPrefix(*endpoint, "unix://")
	if err := os.MkdirAll(*stateDir, 0o755); err != nil {
		log.Fatalf("state dir: %v", err)
	}
	_ = os.Remove(socket)
	listener, err := net.Listen("unix", socket)
	if err != nil {
		log.Fatalf("listening on %s: %v", socket, err)
	}
	server := grpc.NewServer()
	d := &driver{stateDir: *stateDir}
	csi.RegisterIdentityServer(server, d)
	csi.RegisterControllerServer(server, d)
	if *nodeID != "" {
		csi.RegisterNodeServer(server, &nodeServer{d: d, nodeID: *nodeID})
		if *registrationDir != "" {
			if err := serveRegistration(*registrationDir, socket); err != nil {
				log.Fatalf("kubelet registration: %v", err)
			}
		}
	}
	fmt.Printf("%s serving on %s, state in %s\n", driverName, socket, *stateDir)
	if err := server.Serve(listener); err != nil {
		log.Fatalf("serving: %v", err)
	}
}
