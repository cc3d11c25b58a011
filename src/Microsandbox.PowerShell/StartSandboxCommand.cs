using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Starts stopped sandboxes.</para>
/// <para type="description">Boots the microVM of each sandbox that is stopped or crashed and waits until its agent is ready. Running sandboxes are left as they are.</para>
/// </summary>
[Cmdlet(VerbsLifecycle.Start, "Sandbox", SupportsShouldProcess = true, DefaultParameterSetName = ByName)]
[OutputType(typeof(Sandbox))]
public sealed class StartSandboxCommand : SandboxTargetCmdlet
{
    /// <summary>
    /// <para type="description">Emit the started sandboxes.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        foreach (Sandbox target in Targets())
        {
            if (!ShouldProcess(target.Name, "Start sandbox"))
            {
                continue;
            }

            ForEach(target, s =>
            {
                Sandbox started = Run((progress, token) => Engine.StartAsync(s.Name, progress, token));
                if (PassThru)
                {
                    WriteObject(started);
                }
            });
        }
    }
}
