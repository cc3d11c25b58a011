using Microsandbox.Protocol;
using Microsandbox.Runtime;

[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

// msb-runtime <spec.json>: supervises one sandbox until its VM ends. Started by the engine,
// detached from it, and the only parent the VMM ever has.
if (args.Length != 1 || !File.Exists(args[0]))
{
    Console.Error.WriteLine("usage: msb-runtime <runtime-spec.json>");
    return 2;
}

RuntimeSpec spec = RuntimeSpecFile.Load(args[0]);
Native.Detach(Path.Join(Path.GetDirectoryName(Path.GetFullPath(args[0])), "runtime.log"));
using var supervisor = new Supervisor(spec);
supervisor.StartVmm();
return await supervisor.RunAsync();
