using System.Diagnostics;
using Microsandbox.Agent;

[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

// The guest agent: PID 1 of every sandbox. Any exception that escapes ends the VM with a
// kernel panic (init exited), which the host sees as a crash with this message on the console.
var clock = Stopwatch.StartNew();
if (Environment.ProcessId == 1)
{
    GuestInit.MountKernelFilesystems("/");
}

var kernelArgs = GuestInit.ReadKernelArgs();
if (kernelArgs.ContainsKey("msb.exit"))
{
    // The boot bench's baseline: kernel to init and straight back out, nothing of ours in between.
    Native.Check(Native.Reboot(Native.RebootCmdRestart), "reboot");
}

GuestInit.Log($"started; loading modules at {clock.ElapsedMilliseconds} ms");
GuestInit.LoadModules(kernelArgs);
GuestInit.Log($"modules loaded at {clock.ElapsedMilliseconds} ms");
string port = GuestInit.FindPort("agent", TimeSpan.FromSeconds(30));
if (kernelArgs.TryGetValue("msb.rawbench", out string? rawBench))
{
    // The stream bench's baseline: the agent port at full speed, with no protocol and no process.
    RawChannelBench.Run(port, rawBench);
    Native.Check(Native.Reboot(Native.RebootCmdRestart), "reboot");
}

string kernelRelease = File.ReadAllText("/proc/sys/kernel/osrelease").Trim();
if (Environment.ProcessId == 1)
{
    PseudoTerminal.KeepHelper("/msb-exec");
    GuestInit.AssembleRoot(kernelArgs);
    GuestInit.EnterRoot(kernelArgs);
}

var handle = File.OpenHandle(port, FileMode.Open, FileAccess.ReadWrite);
using var input = new FileStream(handle, FileAccess.Read, 0);
using var output = new FileStream(handle, FileAccess.Write, 0);
GuestInit.Log($"ready in {clock.ElapsedMilliseconds} ms on {port}");
using var server = new AgentServer(input, output, kernelRelease);
await server.RunAsync();
