using System.Diagnostics;
using System.Text;

namespace Microsandbox.Agent;

/// <summary>What PID 1 does before it can serve: kernel filesystems, modules, the root, the port.</summary>
internal static class GuestInit
{
    private const string ModuleList = "/etc/msb/modules";
    private const string DefaultRoot = "/rootfs";

    public static void MountKernelFilesystems(string root)
    {
        MountIfMissing("proc", Path.Join(root, "proc"), "proc", Native.MsNosuid | Native.MsNodev | Native.MsNoexec);
        MountIfMissing("sysfs", Path.Join(root, "sys"), "sysfs", Native.MsNosuid | Native.MsNodev | Native.MsNoexec);
        // Each command gets a cgroup in this hierarchy, which finds and kills all it started.
        MountIfMissing("cgroup2", Path.Join(root, "sys/fs/cgroup"), "cgroup2",
            Native.MsNosuid | Native.MsNodev | Native.MsNoexec);
        MountIfMissing("devtmpfs", Path.Join(root, "dev"), "devtmpfs", Native.MsNosuid);
        Directory.CreateDirectory(Path.Join(root, "dev/pts"));
        MountIfMissing("devpts", Path.Join(root, "dev/pts"), "devpts", Native.MsNosuid | Native.MsNoexec, "ptmxmode=0666");
        Directory.CreateDirectory(Path.Join(root, "dev/shm"));
        MountIfMissing("tmpfs", Path.Join(root, "dev/shm"), "tmpfs", Native.MsNosuid | Native.MsNodev);
        MountIfMissing("tmpfs", Path.Join(root, "run"), "tmpfs", Native.MsNosuid | Native.MsNodev, "mode=0755");
    }

    /// <summary>Loads every module the build listed, in its order (dependencies first).</summary>
    public static void LoadModules(IReadOnlyDictionary<string, string> kernelArgs)
    {
        if (!File.Exists(ModuleList))
        {
            return;
        }

        foreach (string line in File.ReadAllLines(ModuleList))
        {
            string path = line.Trim();
            if (path.Length == 0 || path.StartsWith('#'))
            {
                continue;
            }

            // The kernel hands "module.param=value" arguments only to built-in code; modprobe
            // forwards them to loadable modules, so as the loader we do the same.
            string name = Path.GetFileName(path).Split('.')[0].Replace('-', '_');
            string parameters = string.Join(' ', kernelArgs
                .Where(a => a.Key.StartsWith(name + ".", StringComparison.Ordinal))
                .Select(a => $"{a.Key[(name.Length + 1)..]}={a.Value}"));
            try
            {
                using var file = File.OpenHandle(path);
                Native.LoadModule(file, parameters);
            }
            catch (IOException ex)
            {
                Log($"module {name}: {ex.Message}");
            }
        }
    }

    /// <summary>Kernel command line as key/value pairs; bare words map to an empty value.</summary>
    public static Dictionary<string, string> ReadKernelArgs()
    {
        var args = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string word in File.ReadAllText("/proc/cmdline").Split(' ', '\n', '\t'))
        {
            if (word.Length == 0)
            {
                continue;
            }

            int eq = word.IndexOf('=', StringComparison.Ordinal);
            args[eq < 0 ? word : word[..eq]] = eq < 0 ? "" : word[(eq + 1)..];
        }

        return args;
    }

    /// <summary>Finds the virtio-serial port with the given name, waiting for the driver to probe it.</summary>
    public static string FindPort(string name, TimeSpan deadline)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (Directory.Exists("/sys/class/virtio-ports"))
            {
                foreach (string dir in Directory.GetDirectories("/sys/class/virtio-ports"))
                {
                    string nameFile = Path.Join(dir, "name");
                    if (File.Exists(nameFile) && File.ReadAllText(nameFile).Trim() == name)
                    {
                        string device = "/dev/" + Path.GetFileName(dir);
                        if (File.Exists(device))
                        {
                            return device;
                        }
                    }
                }
            }

            if (clock.Elapsed > deadline)
            {
                throw new IOException($"No virtio-serial port named '{name}' appeared within {deadline.TotalSeconds} s.");
            }

            Thread.Sleep(20);
        }
    }

    /// <summary>
    /// Stacks the sandbox root: the image's read-only EROFS disk under the sandbox's ext4 upper
    /// disk, joined by overlayfs at <c>/rootfs</c>. The disks are named by their serials. A
    /// sandbox made from a disk image (<c>msb.root=serial[:partition]</c>) has one disk of its own
    /// instead, mounted writable at <c>/rootfs</c> as it is.
    /// </summary>
    public static void AssembleRoot(IReadOnlyDictionary<string, string> kernelArgs)
    {
        if (kernelArgs.TryGetValue("msb.root", out string? root))
        {
            int colon = root.IndexOf(':', StringComparison.Ordinal);
            string disk = FindDisk(colon < 0 ? root : root[..colon], TimeSpan.FromSeconds(30));
            string device = colon < 0
                ? disk
                : FindPartition(disk, root[(colon + 1)..], TimeSpan.FromSeconds(30));
            Native.Check(Native.Mount(device, DefaultRoot, "ext4", 0, null), $"mount {device} (ext4)");
            return;
        }

        if (!kernelArgs.TryGetValue("msb.lower", out string? lowerSerial) ||
            !kernelArgs.TryGetValue("msb.upper", out string? upperSerial))
        {
            return;
        }

        string upper = FindDisk(upperSerial, TimeSpan.FromSeconds(30));
        Directory.CreateDirectory("/lower");
        Directory.CreateDirectory("/upper");
        if (lowerSerial.StartsWith("9p:", StringComparison.Ordinal))
        {
            // A host folder as the base: mounted read-only over virtio-9p by its tag.
            string tag = lowerSerial[3..];
            Native.Check(Native.Mount(tag, "/lower", "9p", Native.MsRdonly,
                "trans=virtio,version=9p2000.L,msize=262144,cache=loose"), $"mount 9p {tag}");
        }
        else
        {
            string lower = FindDisk(lowerSerial, TimeSpan.FromSeconds(30));
            Native.Check(Native.Mount(lower, "/lower", "erofs", Native.MsRdonly, null), $"mount {lower} (erofs)");
        }

        Native.Check(Native.Mount(upper, "/upper", "ext4", 0, null), $"mount {upper} (ext4)");
        Directory.CreateDirectory("/upper/root");
        Directory.CreateDirectory("/upper/work");
        Native.Check(Native.Mount("overlay", DefaultRoot, "overlay", 0,
            "lowerdir=/lower,upperdir=/upper/root,workdir=/upper/work"), "mount overlay");
    }

    /// <summary>The block device whose virtio serial is <paramref name="serial"/>.</summary>
    private static string FindDisk(string serial, TimeSpan deadline)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            foreach (string dir in Directory.Exists("/sys/block") ? Directory.GetDirectories("/sys/block") : [])
            {
                string serialFile = Path.Join(dir, "serial");
                string device = "/dev/" + Path.GetFileName(dir);
                if (File.Exists(serialFile) && File.ReadAllText(serialFile).Trim() == serial && File.Exists(device))
                {
                    return device;
                }
            }

            if (clock.Elapsed > deadline)
            {
                throw new IOException($"No disk with serial '{serial}' appeared within {deadline.TotalSeconds} s.");
            }

            Thread.Sleep(20);
        }
    }

    /// <summary>
    /// The device of partition <paramref name="number"/> of <paramref name="disk"/>. The kernel reads
    /// the partition table itself when the disk appears; its device may come a moment later.
    /// </summary>
    private static string FindPartition(string disk, string number, TimeSpan deadline)
    {
        string block = Path.Join("/sys/block", Path.GetFileName(disk));
        var clock = Stopwatch.StartNew();
        while (true)
        {
            foreach (string dir in Directory.GetDirectories(block))
            {
                string partitionFile = Path.Join(dir, "partition");
                string device = "/dev/" + Path.GetFileName(dir);
                if (File.Exists(partitionFile) && File.ReadAllText(partitionFile).Trim() == number
                    && File.Exists(device))
                {
                    return device;
                }
            }

            if (clock.Elapsed > deadline)
            {
                throw new IOException(
                    $"Partition {number} of {disk} did not appear within {deadline.TotalSeconds} s.");
            }

            Thread.Sleep(20);
        }
    }

    /// <summary>Makes the sandbox root the root: kernel filesystems inside it, then chroot.</summary>
    public static void EnterRoot(IReadOnlyDictionary<string, string> kernelArgs)
    {
        string root = DefaultRoot;
        MountKernelFilesystems(root);
        MountIfMissing("tmpfs", Path.Join(root, "tmp"), "tmpfs", Native.MsNosuid | Native.MsNodev, "mode=1777");
        Native.Check(Native.Chroot(root), $"chroot {root}");
        Native.Check(Native.Chdir("/"), "chdir /");
        if (kernelArgs.TryGetValue("msb.hostname", out string? host) && host.Length > 0)
        {
            byte[] bytes = Encoding.UTF8.GetBytes(host);
            _ = Native.SetHostName(bytes, (nuint)bytes.Length);
        }
    }

    public static void Log(string message)
    {
        // PID 1 starts with the console as its standard streams.
        Console.Error.WriteLine($"msb-agent: {message}");
    }

    private static void MountIfMissing(
        string source, string target, string fstype, ulong flags, string? data = null)
    {
        Directory.CreateDirectory(target);
        if (Native.Mount(source, target, fstype, flags, data) != 0)
        {
            const int EBUSY = 16;
            int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            if (errno != EBUSY)
            {
                Log($"mount {fstype} on {target}: errno {errno}");
            }
        }
    }
}
