#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# Enter-Sandbox on a real terminal: util-linux's script gives a fresh pwsh a pseudo-terminal of
# a known size, and what is typed is fed to it, keys and Ctrl+C alike; the host resizes that
# terminal as a window would, and the engine's terminal sessions are driven directly too.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $env:MSB_TEST_MODULE_PATH = Import-MicrosandboxUnderTest
    $null = New-Sandbox -Name tty -WarningAction SilentlyContinue -ErrorAction Stop

    function Invoke-OnTerminal {
        <#
        Runs Enter-Sandbox in a fresh pwsh on a 30x100 terminal, typing each of -Keys after a pause.
        A key 'resize ROWSxCOLUMNS' is no key: the terminal gets that size, and pwsh its SIGWINCH.
        #>
        param([string] $Arguments, [string[]] $Keys)
        $script = Join-Path ([IO.Path]::GetTempPath()) "msb-tty-$PID.ps1"
        $terminal = Join-Path ([IO.Path]::GetTempPath()) "msb-tty-$PID.pts"
        Set-Content $script @"
`$env:MSB_HOME = '$($env:MSB_HOME)'
Import-Module '$($env:MSB_TEST_MODULE_PATH)'
"`$(readlink /proc/`$PID/fd/0) `$PID" | Set-Content '$terminal'
Enter-Sandbox $Arguments
"exit=`$LASTEXITCODE"
"@
        $pwsh = (Get-Process -Id $PID).Path
        $prefix = if ($pwsh -match 'dotnet(\.exe)?$') { "'$pwsh' '$PSHOME/pwsh.dll'" } else { "'$pwsh'" }
        # The keys wait for pwsh and the shell to start: typed earlier, they would only be buffered.
        $steps = $Keys | ForEach-Object {
            if ($_ -match '^resize (\d+)x(\d+)$') {
                "stty -F `$(cut -d' ' -f1 '$terminal') rows $($Matches[1]) cols $($Matches[2]); " +
                    "kill -WINCH `$(cut -d' ' -f2 '$terminal'); sleep 1.5"
            }
            else { "printf '$_'; sleep 1.5" }
        }
        $typing = (@('sleep 6') + @($steps) + @('sleep 3')) -join '; '
        $inner = "stty cols 100 rows 30; $prefix -NoProfile -NonInteractive -File '$script'"
        $output = & sh -c "($typing) | timeout 90 script -qec `"$inner`" /dev/null" 2>&1
        Remove-Item $script, $terminal -ErrorAction Ignore
        return ($output -join "`n") -replace "`r", ''
    }
}

AfterAll {
    Get-Sandbox -Name 'tty', 'tty-*' -ErrorAction Ignore | Remove-Sandbox -Force
}

Describe 'Enter-Sandbox' -Tag VM, Linux {
    It 'runs an interactive shell on a terminal of the window''s size, and returns its exit code' {
        $out = Invoke-OnTerminal -Arguments 'tty' -Keys 'echo hi-from-$((6*7)); tty; stty size\n', 'exit 3\n'
        $out | Should -Match 'hi-from-42'
        $out | Should -Match '/dev/pts/\d+'
        $out | Should -Match '(?m)^30 100$'
        $out | Should -Match '(?m)^exit=3$'
    }

    It 'follows the window when the host terminal is resized while the shell runs' {
        $out = Invoke-OnTerminal -Arguments 'tty' -Keys 'sleep 3; stty size\n', 'resize 40x120', 'exit\n'
        $out | Should -Match '(?m)^40 120$'
        $out | Should -Match '(?m)^exit=0$'
    }

    It 'sends Ctrl+C to the guest, where it interrupts the command, not the session' {
        $out = Invoke-OnTerminal -Arguments 'tty' -Keys 'sleep 300\n', '\003', 'echo status=$?\n', 'exit\n'
        $out | Should -Match 'status=130'
        $out | Should -Match '(?m)^exit=0$'
    }

    It 'runs a command with -Command, as another user with -User' {
        $out = Invoke-OnTerminal -Arguments "tty -Command 'id -u; tty' -User nobody" -Keys @()
        $out | Should -Match '(?m)65534$'
        $out | Should -Match '/dev/pts/\d+'
        $out | Should -Match '(?m)^exit=0$'
    }

    It 'says UserNotFound for a user the sandbox does not know, and starts no shell' {
        $r = Invoke-Captured { Enter-Sandbox -Name tty -User ghost-user }
        $r.Errors | Should -HaveCount 1
        Get-ErrorId $r.Errors[0] | Should -Be 'UserNotFound'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        "$($r.Errors[0])" | Should -BeLike '*ghost-user*'
    }

    It 'says SandboxNotFound and SandboxNotRunning without touching the terminal' {
        $r = Invoke-Captured { Enter-Sandbox -Name tty-none }
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxNotFound'
        $null = New-Sandbox -Name tty-stopped -WarningAction SilentlyContinue -ErrorAction Stop
        Stop-Sandbox -Name tty-stopped
        $r = Invoke-Captured { Enter-Sandbox -Name tty-stopped }
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxNotRunning'
        $r.Errors[0].TargetObject | Should -Be 'tty-stopped'
    }
}

Describe 'Terminal sessions in the engine' -Tag VM, Linux {
    It 'resizes the terminal while the command runs, and merges stderr into the terminal' {
        $engine = [Microsandbox.Engine.SandboxEngine]::new([Microsandbox.Engine.SandboxHome]::FromEnvironment())
        $keys = [Threading.Channels.Channel]::CreateUnbounded[ReadOnlyMemory[byte]]()
        $control = [Threading.Channels.Channel]::CreateUnbounded[Microsandbox.Engine.SessionControl]()
        $command = [Microsandbox.Engine.SandboxCommand]@{
            Arguments     = [string[]]@('/bin/sh', '-c', 'stty size; echo to-stderr >&2; read x; stty size')
            Terminal      = [Microsandbox.Protocol.TerminalSize]@{ Rows = 24; Columns = 80 }
            StandardInput = $keys.Reader
            Control       = $control.Reader
        }
        $events = $engine.ExecAsync('tty', $command, [Threading.CancellationToken]::None).GetAsyncEnumerator(
            [Threading.CancellationToken]::None)
        $text = [Text.StringBuilder]::new()
        $resized = $false
        $channels = [Collections.Generic.HashSet[string]]::new()
        while ($events.MoveNextAsync().AsTask().GetAwaiter().GetResult()) {
            $e = $events.Current
            if ($e.Kind -eq 'Output') {
                $null = $channels.Add("$($e.Stream)")
                $null = $text.Append([Text.Encoding]::UTF8.GetString($e.Data.ToArray()))
                if (-not $resized -and "$text" -match 'to-stderr') {
                    $resized = $true
                    $size = [Microsandbox.Protocol.TerminalSize]@{ Rows = 50; Columns = 132 }
                    $null = $control.Writer.TryWrite([Microsandbox.Engine.SessionControl]::new($size, $null, $false))
                    Start-Sleep -Milliseconds 500
                    $null = $keys.Writer.TryWrite([ReadOnlyMemory[byte]][Text.Encoding]::ASCII.GetBytes("`r"))
                }
            }
            elseif ($e.Kind -eq 'Exited') { $exit = $e.ExitCode }
        }
        $events.DisposeAsync().AsTask().GetAwaiter().GetResult()
        $lines = "$text" -split "`r?`n" | Where-Object { $_ -match '^\d+ \d+$' }
        $lines | Should -Be @('24 80', '50 132')
        "$text" | Should -Match 'to-stderr'
        @($channels) | Should -Be @('Stdout')
        $exit | Should -Be 0
    }
}
