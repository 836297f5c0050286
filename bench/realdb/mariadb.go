package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// mariadb is a private server: its own data directory and socket in a
// temporary directory, no network.
type mariadb struct {
	cmd    *exec.Cmd
	socket string
}

func startMariaDB(ctx context.Context, work string) (*mariadb, error) {
	data := filepath.Join(work, "mysql")
	if out, err := exec.Command("mariadb-install-db", "--no-defaults", "--user=root", "--datadir="+data,
		"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mariadb-install-db: %v\n%s", err, out)
	}
	db := &mariadb{socket: filepath.Join(work, "mysqld.sock")}
	db.cmd = exec.Command("mariadbd", "--no-defaults", "--user=root", "--datadir="+data, "--socket="+db.socket,
		"--skip-networking", "--pid-file="+filepath.Join(work, "mysqld.pid"), "--log-error="+filepath.Join(work, "mysqld.err"),
		"--innodb-buffer-pool-size=512M", "--innodb-log-file-size=256M")
	if err := db.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for exec.Command("mariadb-admin", "--socket="+db.socket, "-uroot", "ping").Run() != nil {
		if time.Now().After(deadline) {
			db.stop()
			log, _ := os.ReadFile(filepath.Join(work, "mysqld.err"))
			return nil, fmt.Errorf("mariadbd did not start:\n%s", log)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, err := exec.Command("mariadb", "--socket="+db.socket, "-uroot", "-e", "CREATE DATABASE sbtest").CombinedOutput(); err != nil {
		db.stop()
		return nil, fmt.Errorf("create database: %v: %s", err, out)
	}
	return db, nil
}

func (db *mariadb) stop() {
	exec.Command("mariadb-admin", "--socket="+db.socket, "-uroot", "shutdown").Run()
	done := make(chan error, 1)
	go func() { done <- db.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		db.cmd.Process.Kill()
		<-done
	}
}
